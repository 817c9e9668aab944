"""azuld's own admin API (`/api/azuld/v1/...`): what `plugins`, `failed`, `reoffer`, `reoffers`,
`cluster` and `jobs` reply, and the re-offer record kept in `system.reoffer`.

Field order is the order of the JSON keys; the CLI, the dashboard and the tests read these keys.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from azuld.models.events import BinaryEvent

__all__ = [
    "ClusterEvent",
    "ClusterMember",
    "ClusterView",
    "FailedJob",
    "JobInFlight",
    "JobsInFlight",
    "PluginFailure",
    "PluginKeySummary",
    "Reoffer",
    "ReofferOutcome",
    "ReofferRecord",
]


class Reoffer(msgspec.Struct, kw_only=True):
    """A job put back in front of one plugin key by an admin (`system.reoffer`; the audit trail)."""

    plugin_key: str
    job_id: str
    by: str
    at: datetime
    event: BinaryEvent


class ReofferOutcome(msgspec.Struct, kw_only=True):
    """What became of one job id of a re-offer request: `plugin_key` if it was re-offered, else
    the `reason` why not."""

    job_id: str
    ok: bool
    reason: str | msgspec.UnsetType = msgspec.UNSET
    plugin_key: str | msgspec.UnsetType = msgspec.UNSET


class ReofferRecord(msgspec.Struct, kw_only=True):
    """One line of the re-offer audit trail: who re-offered which job to which key, and when."""

    at: str  # ISO 8601, as `datetime.isoformat` writes it
    by: str
    plugin_key: str
    job_id: str
    sha256: str


class FailedJob(msgspec.Struct, kw_only=True):
    """A dead letter: a job that ended in an error status (the plugin's, or azuld's
    `error-timeout` after the last attempt)."""

    job_id: str
    plugin: str
    version: str
    status: str
    error: str
    message: str  # the last line of the status's message
    sha256: str
    source: str
    at: str  # the status's timestamp, ISO 8601 as `datetime.isoformat` writes it


class PluginFailure(msgspec.Struct, frozen=True, kw_only=True):
    """A job that ended badly, kept for `azuld status` and the dashboard."""

    at: float  # wall-clock seconds
    sha256: str
    status: str
    error: str
    message: str
    job_id: str = ""  # what `POST /api/azuld/v1/reoffer` takes to offer it again


class PluginKeySummary(msgspec.Struct, kw_only=True):
    """One plugin key as this instance serves it: lanes, lag, in flight, done, recent failures."""

    key: str
    name: str
    version: str
    model: str
    active: bool
    # A watcher's feed (`azuld watch`): forgotten soon after its last poll.
    ephemeral: bool = False
    lanes: list[str]
    lag: dict[str, int]  # per lane: events not finished yet
    queued: int
    in_flight: int
    fetched: int
    finished: dict[str, int]  # per ending (and `cached`: answered from the replay cache)
    # Final statuses of a runner plugin's multiplugins, per "<author>: <status>" (they carry
    # results but do not end the job: the plugin's own status does).
    multiplugins: dict[str, int] = {}
    errors_last_hour: int
    replayed: int
    replay_saved_seconds: float
    last_seen: float  # wall-clock seconds of the last fetch; 0 if none
    recent_failures: list[PluginFailure]  # the newest ten, oldest first
    history: list[dict[str, int]]  # per minute of the last hour: `minute` and the counts


class ClusterMember(msgspec.Struct, kw_only=True):
    """One instance sharing the event log, as the log's group sees it now."""

    instance: str
    host: str
    this: bool  # the instance that answered
    partitions: int  # how many it owns
    topics: dict[str, list[int]]  # the partitions it owns, by topic


class ClusterEvent(msgspec.Struct, kw_only=True):
    """Work that moved with partitions: this instance handed its partitions' leases over (a
    rebalance took partitions from it), or took leases over from the previous owner."""

    at: float  # wall-clock seconds
    kind: Literal["handed-over", "took-over"]
    partitions: int
    leases: int
    plugin_key: str = ""  # took-over: whose leases
    partition: str = ""  # took-over: `topic:partition`
    peer: str = ""  # took-over: the instance that handed them over


class ClusterView(msgspec.Struct, kw_only=True):
    """The instances sharing the event log and what moved between them, seen from one."""

    instance: str  # the instance that answered
    shared: bool  # whether other instances may share the log (Kafka)
    members: list[ClusterMember]
    problem: str  # why the members could not be read now; "" if they were
    rebalances: int  # partition moves this instance has been through since it started
    leases_handed_over: dict[str, int]  # `given` and `taken`, since it started
    recent: list[ClusterEvent]  # hand-overs and take-overs, newest first


class JobInFlight(msgspec.Struct, kw_only=True):
    """A job leased to a plugin on this instance right now."""

    job_id: str
    plugin: str
    version: str
    plugin_key: str
    lane: str
    attempt: int
    sha256: str
    filename: str  # the binary's name where it was found ("" if it has none)
    source: str
    age_seconds: float  # since this attempt was handed out
    lease_left_seconds: float  # until the lease runs out unless heartbeated
    instance: str


class JobsInFlight(msgspec.Struct, kw_only=True):
    """Jobs in flight on one instance, the longest-running first."""

    instance: str
    total: int  # all of them; `jobs` holds at most the `limit` asked for
    jobs: list[JobInFlight]
