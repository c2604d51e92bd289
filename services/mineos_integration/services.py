"""Builds each service's dependencies from the settings, once per process."""

from functools import cache

from mineos_integration import clients
from mineos_integration.collector import Collector
from mineos_integration.contract import PrivacyRequest
from mineos_integration.datamap import build_sources, load_data_map
from mineos_integration.export import UrlSigner
from mineos_integration.ingress import Ingress
from mineos_integration.ledger import Ledger
from mineos_integration.logs import configure_logging
from mineos_integration.mineos_client import MineOSClient
from mineos_integration.preview import build_preview
from mineos_integration.settings import ConfigurationError, Settings, get_settings
from mineos_integration.sources.base import Anonymisation, DataSource, SourceContext


def _ledger(settings: Settings) -> Ledger:
    return Ledger(
        clients.firestore_client(),
        settings.ledger_collection,
        lease_seconds=settings.lease_seconds,
        retention_days=settings.ledger_retention_days,
        timeout_seconds=settings.firestore_timeout_seconds,
    )


@cache
def data_sources() -> list[DataSource]:
    """The data map's sources, built once per process (they hold connection pools)."""
    settings = get_settings()
    context = SourceContext(
        firestore_client=clients.firestore_client,
        storage_client=clients.storage_client,
        anonymisation_key=settings.anonymisation_key.get_secret_value().encode(),
        timeout_seconds=settings.source_timeout_seconds,
    )
    data_map = load_data_map(settings.data_map_path)
    hashes = any(
        rule == Anonymisation.HASH for source in data_map.sources for rule in source.delete.fields.values()
    )
    if hashes and not context.anonymisation_key:
        raise ConfigurationError("the data map anonymises with 'hash': set ANONYMISATION_KEY")
    return build_sources(data_map, context)


@cache
def ingress_service() -> Ingress:
    settings = get_settings()
    configure_logging(settings.log_level)
    settings.require("google_cloud_project", "mine_signing_secrets", "requests_topic")
    publisher = clients.publisher()
    sources = data_sources() if settings.data_map_path else []

    def preview(request: PrivacyRequest) -> dict[str, object]:
        return build_preview(sources, request, settings.preview_deadline_seconds)

    return Ingress(
        signing_secrets=settings.signing_secrets,
        signature_scheme=settings.signature_scheme,
        publisher=publisher,
        topic_path=publisher.topic_path(settings.google_cloud_project, settings.requests_topic),
        publish_timeout_seconds=settings.publish_timeout_seconds,
        ledger=_ledger(settings),
        preview=preview,
    )


@cache
def collector_service() -> Collector:
    settings = get_settings()
    configure_logging(settings.log_level)
    settings.require("google_cloud_project", "mineos_api_key", "export_bucket", "data_map_path")
    storage = clients.storage_client()
    return Collector(
        ledger=_ledger(settings),
        sources=data_sources(),
        mineos=MineOSClient(
            settings.mineos_api_base_url,
            settings.mineos_api_key.get_secret_value(),
            timeout_seconds=settings.mineos_timeout_seconds,
            max_attempts=settings.mineos_max_attempts,
            backoff_seconds=settings.mineos_backoff_seconds,
        ),
        bucket=storage.bucket(settings.export_bucket),
        signer=UrlSigner(storage, settings.signed_url_ttl_seconds, settings.url_signing_key_file),
        inline_data_max_bytes=settings.inline_data_max_bytes,
    )
