"""What a failed S3 request means: the key (or bucket) is missing, the failure is worth another
try (connection refused or dropped, 5xx, throttling), or it is final; and the `UpstreamError`
the caller gets, saying what failed, where, and S3's (or the network's) words."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from azuld.errors import UpstreamError

__all__ = [
    "MISSING_CODES",
    "TRANSIENT_CODES",
    "Missing",
    "Transient",
    "classify",
    "error_code",
    "upstream_error",
]

MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestTimeTooSkewed",
    }
)


class Missing(Exception):
    """The key (or the whole bucket) is not there: the S3 error code says which."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Transient(Exception):
    """A failure worth one more try; carries the `UpstreamError` to raise if tries run out."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


def error_code(exc: ClientError) -> tuple[str, int]:
    response: dict[str, Any] = exc.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def upstream_error(endpoint: str, what: str, exc: BaseException) -> UpstreamError:
    """The error for the caller: what failed, where, and S3's (or the network's) words."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        reason = exc.response.get("Error", {}).get("Message") or code or str(exc)
        return UpstreamError(f"S3 at {endpoint} refused to {what} (HTTP {status} {code}: {reason})")
    return UpstreamError(f"S3 at {endpoint} is unreachable: cannot {what}: {exc}")


def classify(endpoint: str, what: str, exc: Exception) -> Exception:
    """`Missing`, `Transient` or the final `UpstreamError` for a failed request."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code in MISSING_CODES or status == 404:
            return Missing(code or "404")
        if code in TRANSIENT_CODES or status >= 500 or status == 429:
            return Transient(upstream_error(endpoint, what, exc))
        return upstream_error(endpoint, what, exc)
    # BotoCoreError: connection refused, reset, closed, timed out; a broken response stream.
    return Transient(upstream_error(endpoint, what, exc))
