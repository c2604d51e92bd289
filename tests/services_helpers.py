"""Helpers for tests that build the services from the environment, as Cloud Run does."""

from mineos_integration import clients, services
from mineos_integration.settings import get_settings


def clear_service_caches() -> None:
    """Forget every per-process object, so the next call reads the test's environment."""
    for cached in (
        get_settings,
        services.ingress_service,
        services.collector_service,
        services.data_sources,
        clients.publisher,
        clients.firestore_client,
        clients.storage_client,
    ):
        cached.cache_clear()
