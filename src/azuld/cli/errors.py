"""What the command line reports instead of a traceback: a wrong argument (exit 2), and a daemon
that cannot be reached or said no (exit 1). `azuld.cli.main` prints each as one message."""

from __future__ import annotations

__all__ = ["ConnectionLost", "DaemonError", "Refused", "Unreachable", "UsageError"]


class UsageError(Exception):
    """An argument is wrong; nothing was sent to the daemon."""


class DaemonError(Exception):
    """The daemon could not be asked, or did not answer as it should."""


class Unreachable(DaemonError):
    """Nothing listens at the server URL (or it cannot be resolved)."""

    def __init__(self, server: str) -> None:
        super().__init__(
            f"cannot reach azuld at {server} (is `azuld serve` running? use --server or "
            "AZULD_SERVER)"
        )
        self.server = server


class ConnectionLost(DaemonError):
    """The daemon was reached, then the connection failed (it stopped, or timed out)."""

    def __init__(self, server: str, error: BaseException) -> None:
        super().__init__(f"lost the connection to azuld at {server}: {_describe(error)}")
        self.server = server


class Refused(DaemonError):
    """The daemon answered with an error: its status, title and detail."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{status} {title}: {detail}" if title else f"{status} {detail}")
        self.status = status
        self.title = title
        self.detail = detail


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
