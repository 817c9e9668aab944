"""Job ids: what a status names its job by, signed so that nobody can make one up.

A job id (`dequeued`) says where the job's event lives and which attempt it is, so that a status
can finish it on any instance and after a restart, without shared lease state:

    azd2|<plugin key>|<lane>|<topic>|<partition>|<offset>|<attempt>|<mac>

`mac` is an HMAC-SHA256 (the first 96 bits, hex) of everything before it under a secret every
instance shares (`dispatch.job_id_secret`, or one generated at the first start and kept in the
event log). A client cannot forge an id for an event not handed out yet, for another plugin key,
or with another attempt: a status with such an id is refused (422). Ids of other formats (the Go
dispatcher's UUIDs, azuld's unsigned `azd1` ids of earlier versions) are not ours: their statuses
are stored and finish nothing. Sans-I/O.
"""

from __future__ import annotations

import hashlib
import hmac

from azuld.core.cursor import TopicPartition
from azuld.core.delivery import JobRef, Lane

__all__ = ["SIGNED", "JobIds", "author_may_report"]

SIGNED = "azd2"
_MAC_HEX = 24  # 96 bits


class JobIds:
    """Makes and reads signed job ids under one secret."""

    def __init__(self, secret: bytes = b"") -> None:
        self.secret = secret

    def _mac(self, unsigned: str) -> str:
        digest = hmac.new(self.secret, unsigned.encode(), hashlib.sha256).hexdigest()
        return digest[:_MAC_HEX]

    def make(self, ref: JobRef, attempt: int) -> str:
        unsigned = (
            f"{SIGNED}|{ref.plugin_key}|{ref.lane}|{ref.tp.topic}|{ref.tp.partition}"
            f"|{ref.offset}|{attempt}"
        )
        return f"{unsigned}|{self._mac(unsigned)}"

    def parse(self, job_id: str) -> tuple[JobRef, int] | None:
        """`(ref, attempt)` of a valid signed id; `None` for anything else (see `problem`)."""
        parts = job_id.split("|")
        if len(parts) != 8 or parts[0] != SIGNED or parts[2] not in Lane.ORDER:
            return None
        unsigned, _, mac = job_id.rpartition("|")
        if not hmac.compare_digest(mac, self._mac(unsigned)):
            return None
        try:
            tp = TopicPartition(parts[3], int(parts[4]))
            return JobRef(parts[1], parts[2], tp, int(parts[5])), int(parts[6])
        except ValueError:
            return None

    def problem(self, job_id: str) -> str | None:
        """Why a job id that claims to be azuld's (`azd2|…`) is not one azuld issued; `None` for
        a valid one and for ids of other formats (not ours to judge)."""
        if not job_id.startswith(SIGNED + "|"):
            return None
        if self.parse(job_id) is not None:
            return None
        return (
            f"job id {job_id[:200]!r} is not one azuld handed out (damaged, made up, or changed: "
            "its signature does not match)"
        )


def author_may_report(author: str, plugin_name: str) -> bool:
    """Whether `author` may post statuses for jobs of `plugin_name`'s key: the plugin itself, or
    one of its runner multiplugins (`<name>-<multiplugin>`)."""
    return author == plugin_name or author.startswith(plugin_name + "-")
