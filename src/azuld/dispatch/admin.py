"""Admin views and dead letters: what `azuld status`, `azuld failed` and `azuld reoffer` (and the
dashboard and `/metrics`) ask of the dispatcher: per-key summaries, the cluster, the jobs in
flight. Replies are the structs of `azuld.models.admin`.

A re-offer is a record in `system.reoffer` naming the job and its plugin key: the audit trail,
and what that key's re-offer lane reads (ahead of its other lanes, with no filter applied).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import aclosing
from datetime import UTC, datetime

import msgspec
import trio

from azuld.core.delivery import Job, Lane
from azuld.core.keys import system_topic
from azuld.core.posts import DECODERS
from azuld.core.publish import Outgoing
from azuld.dispatch.keys import KeyRegistry, KeyState
from azuld.dispatch.scan import scan
from azuld.errors import UpstreamError
from azuld.metrics import Metrics
from azuld.models.admin import (
    ClusterMember,
    ClusterView,
    FailedJob,
    JobInFlight,
    JobsInFlight,
    PluginKeySummary,
    Reoffer,
    ReofferOutcome,
    ReofferRecord,
)
from azuld.ports import EventLog, Membership

__all__ = ["FAILED_SCAN_RECORDS", "Admin"]

# `azuld failed` looks at this many of the newest statuses per partition.
FAILED_SCAN_RECORDS = 50_000
# How long the cluster view waits for the log to list its members.
MEMBERSHIP_SECONDS = 3.0

_encode = msgspec.json.Encoder().encode
_REOFFER_DECODER = msgspec.json.Decoder(Reoffer)


class _PathGlimpse(msgspec.Struct):
    sha256: str = ""
    filename: str = ""


class _SourceGlimpse(msgspec.Struct):
    name: str = ""
    path: list[_PathGlimpse] = []


class _EntityGlimpse(msgspec.Struct):
    sha256: str = ""


class _EventGlimpse(msgspec.Struct):
    """What the jobs view shows of a binary event (decoded without the rest of it)."""

    entity: _EntityGlimpse = msgspec.field(default_factory=_EntityGlimpse)
    source: _SourceGlimpse = msgspec.field(default_factory=_SourceGlimpse)

    @property
    def filename(self) -> str:
        """The binary's name where it was found: its own path node's, if it has one."""
        for node in reversed(self.source.path):
            if node.sha256 == self.entity.sha256 and node.filename:
                return node.filename
        return ""


class _ReofferGlimpse(msgspec.Struct):
    event: _EventGlimpse


_GLIMPSE = msgspec.json.Decoder(_EventGlimpse)
_REOFFER_GLIMPSE = msgspec.json.Decoder(_ReofferGlimpse)


def _glimpse(job: Job) -> _EventGlimpse:
    try:
        if job.ref.lane == Lane.REOFFER:
            return _REOFFER_GLIMPSE.decode(job.value).event
        return _GLIMPSE.decode(job.value)
    except msgspec.DecodeError:
        return _EventGlimpse()


class Admin:
    """Dead letters, re-offers and the per-key summaries, read from the log and the registry."""

    def __init__(self, log: EventLog, prefix: str, metrics: Metrics, registry: KeyRegistry) -> None:
        self.log = log
        self.prefix = prefix
        self.metrics = metrics
        self.registry = registry
        self._rebalances_counted = 0

    async def failed(self, plugin: str = "", limit: int = 200) -> list[FailedJob]:
        """Jobs that ended in an error status (the plugin's, or azuld's `error-timeout` after the
        last retry), newest first, from the last `FAILED_SCAN_RECORDS` statuses per partition."""
        topic = system_topic(self.prefix, "status")
        found: list[FailedJob] = []
        decode = DECODERS["status"].decode
        async with aclosing(scan(self.log, topic.__eq__, newest=FAILED_SCAN_RECORDS)) as values:
            async for value in values:
                try:
                    status = decode(value)
                except msgspec.DecodeError:
                    continue
                entity = status.entity
                if not entity.status.startswith("error-"):
                    continue
                if plugin and status.author.name != plugin:
                    continue
                lines = entity.message.strip().splitlines()
                found.append(
                    FailedJob(
                        job_id=entity.input.dequeued,
                        plugin=status.author.name,
                        version=status.author.version,
                        status=entity.status,
                        error=entity.error,
                        message=lines[-1] if lines else "",
                        sha256=entity.input.entity.sha256,
                        source=entity.input.source.name,
                        at=status.timestamp.isoformat(),
                    )
                )
        found.sort(key=lambda f: f.at, reverse=True)
        return found[:limit]

    async def reoffer(self, job_ids: Iterable[str], by: str) -> list[ReofferOutcome]:
        """Put jobs back in front of their plugin key. Each request is stored in `system.reoffer`
        (who, when, which job): the audit trail, and what the key's re-offer lane reads.

        Raises:
            UpstreamError: the log failed; nothing was re-offered.
        """
        outcome: list[ReofferOutcome] = []
        records: list[Outgoing] = []
        now = datetime.now(UTC)
        for job_id in job_ids:
            parsed = self.registry.ids.parse(job_id)
            if parsed is None:
                outcome.append(
                    ReofferOutcome(job_id=job_id, ok=False, reason="not an azuld job id")
                )
                continue
            ref, _ = parsed
            found = await self.log.read(ref.tp, ref.offset, 1)
            if not found or found[0][0] != ref.offset:
                outcome.append(ReofferOutcome(job_id=job_id, ok=False, reason="its event is gone"))
                continue
            value = found[0][1]
            try:
                if ref.lane == Lane.REOFFER:
                    event = _REOFFER_DECODER.decode(value).event
                else:
                    event = DECODERS["binary"].decode(value)
            except msgspec.DecodeError:
                outcome.append(
                    ReofferOutcome(job_id=job_id, ok=False, reason="its event is unreadable")
                )
                continue
            event.dequeued = ""
            offer = Reoffer(plugin_key=ref.plugin_key, job_id=job_id, by=by, at=now, event=event)
            records.append(
                Outgoing(system_topic(self.prefix, "reoffer"), ref.plugin_key, _encode(offer))
            )
            outcome.append(ReofferOutcome(job_id=job_id, ok=True, plugin_key=ref.plugin_key))
        await self.log.append(records)
        return outcome

    async def reoffers(self, limit: int = 200) -> list[ReofferRecord]:
        """The audit trail: who re-offered which job to which plugin key, and when."""
        topic = system_topic(self.prefix, "reoffer")
        trail: list[ReofferRecord] = []
        async with aclosing(scan(self.log, topic.__eq__, newest=limit)) as values:
            async for value in values:
                try:
                    offer = _REOFFER_DECODER.decode(value)
                except msgspec.DecodeError:
                    continue
                trail.append(
                    ReofferRecord(
                        at=offer.at.isoformat(),
                        by=offer.by,
                        plugin_key=offer.plugin_key,
                        job_id=offer.job_id,
                        sha256=offer.event.entity.sha256,
                    )
                )
        trail.sort(key=lambda t: t.at, reverse=True)
        return trail[:limit]

    async def lag(self, ks: KeyState) -> dict[str, int]:
        """Events not yet finished, per lane: from each cursor's commit to the end it may read."""
        lag: dict[str, int] = {}
        for lane, cursors in ks.lanes.cursors.items():
            ends = await self.log.offsets(list(cursors))
            lag[lane] = sum(
                cursor.unfinished_below(ends.get(tp, (0, 0))[1]) for tp, cursor in cursors.items()
            )
        return lag

    async def key_summaries(self) -> list[PluginKeySummary]:
        """Per plugin key on this instance: lanes, lag, in flight, done, recent failures. Sets
        the lag and in-flight gauges on the way (`/metrics` asks for them first)."""
        hour_ago = time.time() - 3600
        summaries = []
        for key, ks in sorted(self.registry.states.items()):
            lag = await self.lag(ks)
            if not ks.params.ephemeral:  # a watcher's key would stay in the gauges for ever
                name = ks.params.name
                for lane, value in lag.items():
                    self.metrics.lag.labels(name, key, lane).set(value)
                self.metrics.in_flight.labels(name, key).set(ks.lanes.leased)
            summaries.append(
                PluginKeySummary(
                    key=key,
                    name=ks.params.name,
                    version=ks.params.version,
                    model=ks.params.model,
                    active=ks.params.active,
                    ephemeral=ks.params.ephemeral,
                    lanes=list(ks.lanes.lanes),
                    lag=lag,
                    queued=ks.lanes.queued,
                    in_flight=ks.lanes.leased,
                    fetched=ks.fetched,
                    finished=dict(ks.finished),
                    errors_last_hour=sum(1 for f in ks.failures if f.at >= hour_ago),
                    replayed=ks.finished.get("cached", 0),
                    replay_saved_seconds=round(ks.replay_saved_seconds, 3),
                    multiplugins=dict(ks.multiplugins),
                    last_seen=ks.last_seen,
                    recent_failures=list(ks.failures)[-10:],
                    history=ks.history.series(),
                )
            )
        return summaries

    async def cluster(self) -> ClusterView:
        """The instances sharing the log (the partitions each owns), the rebalances this one
        has been through and the work that moved. Sets the cluster gauges on the way. Kafka
        not answering is said in `problem`, with this instance's own part still shown."""
        problem = ""
        membership = Membership(self.log.instance, self._rebalances_counted, ())
        try:
            # A scrape or a dashboard poll must not wait out Kafka's request timeout.
            with trio.move_on_after(MEMBERSHIP_SECONDS) as slow:
                membership = await self.log.membership()
            if slow.cancelled_caught:
                problem = f"the event log did not list its members within {MEMBERSHIP_SECONDS} s"
        except UpstreamError as exc:
            problem = str(exc)
        try:
            owned = len(await self.log.partitions(lambda topic: True))
            self.metrics.partitions_owned.set(owned)
        except UpstreamError as exc:
            problem = problem or str(exc)
        if not problem:
            self.metrics.cluster_members.set(len(membership.members))
        if membership.rebalances > self._rebalances_counted:
            self.metrics.rebalances.inc(membership.rebalances - self._rebalances_counted)
            self._rebalances_counted = membership.rebalances
        members = []
        for member in membership.members:
            topics: dict[str, list[int]] = {}
            for tp in member.partitions:
                topics.setdefault(tp.topic, []).append(tp.partition)
            members.append(
                ClusterMember(
                    instance=member.instance,
                    host=member.host,
                    this=member.instance == membership.instance,
                    partitions=len(member.partitions),
                    topics=topics,
                )
            )
        return ClusterView(
            instance=membership.instance,
            shared=self.log.shared,
            members=members,
            problem=problem,
            rebalances=membership.rebalances,
            leases_handed_over=dict(self.registry.handed_over),
            recent=list(self.registry.recent_moves),
        )

    async def jobs(self, limit: int = 200) -> JobsInFlight:
        """The jobs leased to plugins on this instance, the longest-running first, at most
        `limit` of them."""
        leased = [
            (ks, job) for ks in self.registry.states.values() for job in ks.lanes.leased_jobs()
        ]
        leased.sort(key=lambda pair: pair[1].leased_at)
        now = trio.current_time()
        jobs = []
        for ks, job in leased[:limit]:
            event = _glimpse(job)
            jobs.append(
                JobInFlight(
                    job_id=self.registry.ids.make(job.ref, job.attempt),
                    plugin=ks.params.name,
                    version=ks.params.version,
                    plugin_key=ks.params.key,
                    lane=job.ref.lane,
                    attempt=job.attempt,
                    sha256=event.entity.sha256,
                    filename=event.filename,
                    source=event.source.name,
                    age_seconds=round(max(now - job.leased_at, 0.0), 3),
                    lease_left_seconds=round(max(job.deadline - now, 0.0), 3),
                    instance=self.log.instance,
                )
            )
        return JobsInFlight(instance=self.log.instance, total=len(leased), jobs=jobs)
