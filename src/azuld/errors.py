"""One small error hierarchy, translated to HTTP once, at the boundary (`azuld.http.steps`).

AzuldError
├── ClientError            the caller's fault; carries `http_status`, `title` and `error_enum`
│   ├── BadRequest (400)   malformed request, bad range, hash mismatch, bad name
│   ├── NotFound (404)
│   ├── RangeNotSatisfiable (416)
│   ├── Unprocessable (422) invalid events or parameters
│   │   └── UnreadableLabel    a security label the configured label model cannot read
│   ├── AllFiltered (425)  every posted event was invalid or dropped
│   ├── PayloadTooLarge (413)
│   ├── Unauthorized (401), Forbidden (403)   in azuld.http.auth
│   └── TooManyRequests (429) too many long-polls for one plugin key
├── UpstreamError          a backend (log, blob store) failed under us; HTTP 503
│   └── InsufficientStorage (507) the data folder is full
├── InvalidTransition      a job-state move the state table forbids (a bug if it escapes)
└── ConfigError            a setting is wrong; names the file and the key
"""

from __future__ import annotations

import errno

__all__ = [
    "AllFiltered",
    "AzuldError",
    "BadRequest",
    "ClientError",
    "ConfigError",
    "InsufficientStorage",
    "InvalidTransition",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "TooManyRequests",
    "Unprocessable",
    "UnreadableLabel",
    "UpstreamError",
    "storage_error",
]


class AzuldError(Exception):
    """Root of every error azuld raises on purpose."""


class ClientError(AzuldError):
    """The request was wrong. `detail` says what, in words a plugin author can act on."""

    http_status = 400
    default_title = "bad request"
    error_enum = "ErrorStringEnumUnset"

    def __init__(self, detail: str, *, title: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.title = title or self.default_title


class BadRequest(ClientError):
    http_status = 400


class NotFound(ClientError):
    http_status = 404
    default_title = "not found"


class RangeNotSatisfiable(ClientError):
    http_status = 416
    default_title = "range not satisfiable"

    def __init__(self, detail: str, *, size: int) -> None:
        super().__init__(detail)
        self.size = size


class PayloadTooLarge(ClientError):
    http_status = 413
    default_title = "payload too large"


class Unprocessable(ClientError):
    http_status = 422
    default_title = "bad parameters"


class UnreadableLabel(Unprocessable):
    """A security label (an event's, or a fetch's `max-security`) that the deployment's label model
    cannot read: an unknown marking, no classification, a releasability group without the origin.
    As `max-security` it is the caller's 422; on an event it means the event is not handed out."""

    default_title = "unreadable security label"


class AllFiltered(ClientError):
    http_status = 425
    default_title = "All events to be published have been filtered out"
    error_enum = "ErrorStringEnumAllEventsFiltered"


class TooManyRequests(ClientError):
    http_status = 429
    default_title = "too many requests"


class UpstreamError(AzuldError):
    """A backend failed (disk, SQLite, Kafka, S3). Served as 503: the caller may retry."""

    http_status = 503


class InsufficientStorage(UpstreamError):
    """The data folder is full (ENOSPC): served as 507 until space returns."""

    http_status = 507


def storage_error(what: str, exc: OSError) -> UpstreamError:
    """`InsufficientStorage` (507) for a full disk, `UpstreamError` (503) for other failures."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(f"{what}: no space left on the data folder ({exc.strerror})")
    return UpstreamError(f"{what}: {exc.strerror or exc}")


class InvalidTransition(AzuldError):
    """A job-state change that the state table does not allow."""


class ConfigError(AzuldError):
    """A setting is wrong. The message names the file (or variable) and the key; `problems`
    holds each problem found (one, unless raised by `of`)."""

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        """One error for several problems: the message lists them, one a line."""
        if len(problems) == 1:
            return cls(problems[0])
        listed = "\n  ".join(problems)
        return cls(f"{len(problems)} problems:\n  {listed}", problems=tuple(problems))
