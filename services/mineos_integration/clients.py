"""Google Cloud clients, created once per process and only when first needed.

They find the emulators through PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST and
STORAGE_EMULATOR_HOST themselves: no code here branches on "am I under test".
"""

from functools import cache

from google.cloud import firestore, pubsub_v1, storage  # type: ignore[attr-defined]

from mineos_integration.settings import get_settings


@cache
def publisher() -> pubsub_v1.PublisherClient:
    # Flush after 1 ms rather than the default 10 ms: the ingress waits for each publish before
    # answering, and concurrent requests still share batches.
    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001))


@cache
def firestore_client() -> firestore.Client:
    return firestore.Client(project=get_settings().google_cloud_project or None)


@cache
def storage_client() -> storage.Client:
    return storage.Client(project=get_settings().google_cloud_project or None)
