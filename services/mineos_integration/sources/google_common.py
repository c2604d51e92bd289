"""What the Google connectors (Cloud Storage, Firestore) share: which errors to retry, and how a
failed call becomes a SourceError.

Only google.api_core (with google.auth and requests, which it builds on) is imported, no Cloud client
library: a data map without Firestore sources never loads the Firestore client.
"""

import requests
from google.api_core import exceptions as google_exceptions
from google.api_core import retry as google_retry
from google.auth import exceptions as auth_exceptions

from mineos_integration.sources.base import SourceError

# Errors worth another attempt now. Not Aborted: batched writes never abort for contention.
RETRYABLE_GOOGLE_ERRORS: tuple[type[Exception], ...] = (
    google_exceptions.ServiceUnavailable,
    google_exceptions.DeadlineExceeded,  # also GatewayTimeout
    google_exceptions.BadGateway,
    google_exceptions.InternalServerError,
    google_exceptions.Unknown,
    google_exceptions.TooManyRequests,  # includes ResourceExhausted
    auth_exceptions.TransportError,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)
# Errors worth another attempt later (Pub/Sub redelivery), once ours have run out.
TRANSIENT_GOOGLE_ERRORS: tuple[type[Exception], ...] = (
    *RETRYABLE_GOOGLE_ERRORS,
    google_exceptions.GatewayTimeout,
    google_exceptions.RetryError,  # our own retry gave up within the deadline
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)


def source_error_from_google(error: Exception, what: str) -> SourceError:
    """A SourceError for a failed Google call; the message names the error type, not its text.

    The text of a Google error can hold a document path or object name, i.e. the person's value.
    """
    transient = isinstance(error, TRANSIENT_GOOGLE_ERRORS)
    code = getattr(error, "code", None)
    suffix = f" ({code})" if isinstance(code, int) else ""
    return SourceError(f"{what}: {type(error).__name__}{suffix}", transient=transient)


def google_retry_policy(timeout_seconds: float) -> google_retry.Retry:
    """Exponential backoff with jitter on transient errors, all attempts within `timeout_seconds`."""
    return google_retry.Retry(
        predicate=google_retry.if_exception_type(*RETRYABLE_GOOGLE_ERRORS),
        initial=0.2,
        maximum=4.0,
        multiplier=2.0,
        timeout=timeout_seconds,
    )
