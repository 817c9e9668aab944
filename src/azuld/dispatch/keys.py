"""The plugin-key registry: every plugin key this instance serves, its state and its commits.

Theory of operation: each plugin key gets a `KeyState` holding a `core.delivery.PluginLanes` (what
is queued, leased and committed) and the groups it commits to. The state is built once, on the
key's first fetch (or, for a status that names a key this process has not seen, from the log's
registry of consumers): expedite and live start at the end of the log, historic at its start and
stops where live and expedite began, so no event is delivered twice. From then on the lanes
follow this instance's share of the key's partitions, which a rebalance moves.

An ephemeral key (a watcher's passive feed, `azuld watch`) is this process's alone: it is not
registered, stores no commits, reads every partition (owned here or not; it hands nothing out),
may start a while back (`since`, `last`), and is forgotten once no poll has come for it for
`dispatch.ephemeral_idle_seconds` (`forget_idle`), so dead watchers leave nothing behind.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import trio

from azuld.core.cursor import Commit, LeaseNote, Snapshot, TopicPartition
from azuld.core.delivery import Job, JobRef, Lane, PluginLanes, ReadRequest
from azuld.core.finished import RecentlyFinished
from azuld.core.handover import Handover, handover_key
from azuld.core.jobids import JobIds
from azuld.core.keys import consumer_group, expedite_topic, system_topic
from azuld.core.params import ConsumeParams
from azuld.core.publish import Outgoing
from azuld.errors import UpstreamError
from azuld.metrics import Metrics
from azuld.models.admin import ClusterEvent, PluginFailure
from azuld.ports import EventLog
from azuld.settings import DispatchSettings
from azuld.topics import HANDOVER_TOPIC

__all__ = ["History", "KeyRegistry", "KeyState"]

# Failures kept per key for `azuld status` and the dashboard.
RECENT_FAILURES = 50
# Hand-overs and take-overs kept for the dashboard's cluster view.
RECENT_MOVES = 50
# Distinct multiplugin outcomes ("<author>: <status>") counted per key.
MULTIPLUGIN_OUTCOMES = 100

# ConsumeParams fields only ephemeral keys use: left out of the registry, so instances that do
# not know them can still read it.
_WATCH_FIELDS = ("ephemeral", "since", "last")

# The logger name operators filter on, one for the whole dispatcher (as before the split).
log = logging.getLogger("azuld.dispatcher")


@dataclass(slots=True)
class History:
    """Per-minute counts over the last hour, for the dashboard: fetched, completed, failed."""

    minutes: deque[tuple[int, Counter[str]]] = field(default_factory=lambda: deque(maxlen=60))

    def add(self, what: str, count: int = 1) -> None:
        minute = int(time.time() // 60)
        if not self.minutes or self.minutes[-1][0] != minute:
            self.minutes.append((minute, Counter()))
        self.minutes[-1][1][what] += count

    def series(self) -> list[dict[str, int]]:
        return [{"minute": minute * 60, **counts} for minute, counts in self.minutes]


@dataclass(slots=True)
class KeyState:
    """One plugin key on this instance: its lanes, its groups, its waiting polls and its counts."""

    params: ConsumeParams
    lanes: PluginLanes
    groups: dict[str, str]  # lane -> consumer group
    snapshot: Snapshot  # where the groups started when the key was created
    lock: trio.Lock = field(default_factory=trio.Lock)  # held while the lanes read the log
    polls: int = 0  # long-polls waiting right now
    fetched: int = 0
    finished: Counter[str] = field(default_factory=Counter)
    last_seen: float = 0.0  # wall-clock seconds of the last fetch
    topology_seen: int = -1  # the log's topology when partitions were last assigned
    unsaved_failures: list[Job] = field(default_factory=list)  # error-timeouts not stored yet
    replay_saved_seconds: float = 0.0
    failures: deque[PluginFailure] = field(default_factory=lambda: deque(maxlen=RECENT_FAILURES))
    multiplugins: Counter[str] = field(default_factory=Counter)  # "<author>: <status>"
    history: History = field(default_factory=History)
    wakeup: trio.Event = field(default_factory=trio.Event)  # set when waiting polls may take
    idle_since: float = field(default_factory=trio.current_time)  # when the last poll ended

    def wake(self) -> None:
        self.wakeup.set()
        self.wakeup = trio.Event()

    def count_multiplugin(self, author: str, status: str) -> None:
        outcome = f"{author}: {status}"
        if outcome in self.multiplugins or len(self.multiplugins) < MULTIPLUGIN_OUTCOMES:
            self.multiplugins[outcome] += 1


class KeyRegistry:
    """The plugin keys this instance serves, by key: built, loaded, assigned and committed here."""

    def __init__(
        self,
        log: EventLog,
        settings: DispatchSettings,
        prefix: str,
        metrics: Metrics | None = None,
        ids: JobIds | None = None,
    ) -> None:
        self.log = log
        # Job ids are signed; the secret is set when the dispatcher starts (`Background.run`).
        self.ids = ids or JobIds()
        self.settings = settings
        self.prefix = prefix
        self.metrics = metrics or Metrics()
        self.states: dict[str, KeyState] = {}
        self._creating: dict[str, trio.Lock] = {}  # plugin keys whose state is being built
        # Final statuses stored by any instance, for a while (`core.finished`).
        self.finished = RecentlyFinished(settings.finished_memory_seconds)
        self.instance = log.instance
        self._handover_topic = system_topic(prefix, HANDOVER_TOPIC)
        self._notes: tuple[int, dict[str, bytes]] = (-1, {})  # (topology, hand-over table)
        self._commit_due: dict[str, KeyState] = {}  # keys whose commits `commit_soon` asked for
        self._commit_asked = trio.Event()
        # Work that moved with partitions, for the dashboard: leases given and taken, and the
        # latest hand-overs and take-overs, newest first.
        self.handed_over: Counter[str] = Counter(given=0, taken=0)
        self.recent_moves: deque[ClusterEvent] = deque(maxlen=RECENT_MOVES)

    def get(self, key: str) -> KeyState | None:
        return self.states.get(key)

    async def state_for_fetch(self, params: ConsumeParams, known: KeyState | None) -> KeyState:
        """The state of the fetch's plugin key (`known`: what `states` holds for it, if any),
        built on its first fetch and again on a `reset`.

        Raises:
            UpstreamError: the log failed.
        """
        if known is not None and not params.reset:
            known.params = params
            return known
        key = params.key
        # Concurrent first fetches of a key (a fleet of workers starting) must build one state:
        # each would otherwise start the key's lanes from its own read of the log and hand out
        # the same jobs again. Creation awaits the log, so it is serialised per key.
        lock = self._creating.setdefault(key, trio.Lock())
        try:
            async with lock:
                current = self.states.get(key)
                if current is not None and not params.reset:
                    current.params = params
                    return current
                groups = {lane: consumer_group(self.prefix, key, lane) for lane in _lanes(params)}
                if params.reset:
                    if not params.ephemeral:
                        await self.log.forget_consumer(key, list(groups.values()))
                    self.states.pop(key, None)
                snapshot = await self._creation_snapshot(params, groups)
                if not params.ephemeral:
                    fields = {k: v for k, v in asdict(params).items() if k not in _WATCH_FIELDS}
                    info = msgspec.json.encode(fields)
                    snapshot = await self.log.register_consumer(key, info, snapshot)
                return await self._load(params, groups, snapshot)
        finally:
            if not lock.locked():  # trio hands a released lock straight to the next waiter
                self._creating.pop(key, None)

    async def state_for_job(self, ref: JobRef) -> KeyState | None:
        """The key a status refers to, loaded from the log's registry if this process has not
        seen it; `None` if no instance ever registered it.

        Raises:
            UpstreamError: the log failed.
        """
        ks = self.states.get(ref.plugin_key)
        if ks is not None:
            return ks
        info = (await self.log.consumers()).get(ref.plugin_key)
        if info is None:
            return None
        raw = msgspec.json.decode(info)
        params = ConsumeParams(**{k: _untuple(v) for k, v in raw.items()})
        groups = {lane: consumer_group(self.prefix, params.key, lane) for lane in _lanes(params)}
        snapshot = await self.log.register_consumer(params.key, info, {})
        return await self._load(params, groups, snapshot)

    async def _creation_snapshot(self, params: ConsumeParams, groups: dict[str, str]) -> Snapshot:
        """Where a new key's lanes start: expedite and live at the end of the log (a watcher's
        where it asked), historic at the start, stopping where live and expedite began (so no
        event is delivered twice). Covers every partition, owned here or not: other instances
        start from the same snapshot. One read of the partitions and their offsets serves every
        lane: Kafka's metadata may learn of a topic between two reads, and a partition in
        historic's snapshot but not in live's would be read whole by both."""
        filters = {lane: self._topic_filter(params, lane) for lane in groups}
        tps = await self.log.partitions(
            lambda topic: any(matches(topic) for matches in filters.values()), owned=False
        )
        offsets = await self.log.offsets(tps)
        begins = await self._live_begins(params, offsets)
        snapshot: Snapshot = {}
        for lane, group in groups.items():
            mine = {tp: ends for tp, ends in offsets.items() if filters[lane](tp.topic)}
            if lane == Lane.HISTORIC:
                snapshot[group] = {
                    tp: Commit(
                        start, stop=begins[tp] if self._lane_covering(tp) in params.lanes else None
                    )
                    for tp, (start, _) in mine.items()
                }
            else:
                snapshot[group] = {tp: Commit(begins[tp]) for tp in mine}
        return snapshot

    async def _live_begins(
        self, params: ConsumeParams, offsets: dict[TopicPartition, tuple[int, int]]
    ) -> dict[TopicPartition, int]:
        """Where live and expedite begin on each partition: at its end, or for a watcher that
        asked, `last` records back or at the first record appended since `since`."""
        if params.last is not None:
            return {tp: max(start, end - params.last) for tp, (start, end) in offsets.items()}
        if params.since is not None:
            found = await self.log.offsets_at(list(offsets), params.since)
            return {
                tp: min(max(found.get(tp, end), start), end) for tp, (start, end) in offsets.items()
            }
        return {tp: end for tp, (_, end) in offsets.items()}

    async def _load(
        self, params: ConsumeParams, groups: dict[str, str], snapshot: Snapshot
    ) -> KeyState:
        ks = KeyState(
            params=params,
            snapshot=snapshot,
            lanes=PluginLanes(
                params.key,
                _lanes(params),
                window=self.settings.window,
                read_ahead=self.settings.read_ahead,
            ),
            groups=groups,
        )
        self.states[params.key] = ks
        await self.assign_partitions(ks)
        return ks

    async def assign_partitions(self, ks: KeyState) -> None:
        """Follow this instance's share of the key's partitions: start on partitions gained
        (new topics, a rebalance), drop those lost to another instance.

        Raises:
            UpstreamError: the log failed.
        """
        ephemeral = ks.params.ephemeral
        for lane, group in ks.groups.items():
            # A watcher hands nothing out: it reads every partition, whoever owns it.
            topics = self._topic_filter(ks.params, lane)
            owned = set(await self.log.partitions(topics, owned=not ephemeral))
            held = ks.lanes.cursors[lane]
            for tp in held.keys() - owned:
                # Another instance owns it now and starts from the commit: what was queued or
                # leased here will be offered there.
                ks.lanes.unassign(lane, tp)
            new = sorted(owned - held.keys())
            if not new:
                continue
            committed = {} if ephemeral else await self.log.committed(group)
            offsets = await self.log.offsets(new)
            notes = {} if ephemeral else await self._handovers()
            for tp in new:
                commit = committed.get(tp) or ks.snapshot.get(group, {}).get(tp)
                if commit is None:
                    commit = self._unseen_start(ks, lane, tp, offsets[tp][0])
                ks.lanes.assign(lane, tp, commit)
                if tp in committed:
                    # Another owner's position (or this process's before a restart): what it
                    # may have handed out lies below the partition's end.
                    ks.lanes.suspect(lane, tp, offsets[tp][1])
                if not ephemeral:
                    self._take_over(ks, lane, group, tp, commit, notes)

    def _unseen_start(self, ks: KeyState, lane: str, tp: TopicPartition, start: int) -> Commit:
        """Where a lane starts on a partition its key's snapshot does not give it: one born after
        the key, which live reads from its start and historic leaves to live; but where
        historic's snapshot has it (a snapshot taken before the lanes shared one read of the
        log), live begins where historic stops."""
        if lane == Lane.HISTORIC:
            covered = self._lane_covering(tp) in ks.params.lanes
            return Commit(start, stop=start if covered else None)
        historic = ks.snapshot.get(ks.groups.get(Lane.HISTORIC, ""), {}).get(tp)
        if historic is not None and historic.stop is not None and self._lane_covering(tp) == lane:
            return Commit(historic.stop)
        return Commit(start)

    def _take_over(
        self,
        ks: KeyState,
        lane: str,
        group: str,
        tp: TopicPartition,
        commit: Commit,
        notes: dict[str, bytes],
    ) -> None:
        """What the commit does not show yet, on a partition just assigned: jobs whose final
        status another instance stored (its owner died before committing them) are finished,
        and leases the previous owner handed over run on here until they end."""
        done = self.finished.finished_in(ks.params.key, lane, tp, commit.offset)
        if done:
            ks.lanes.finished_elsewhere(lane, tp, done)
        value = notes.get(handover_key(group, tp))
        note = Handover.decode(value) if value is not None else None
        if note is None or not note.leases:
            return
        leases = note.clocked(time.time(), trio.current_time())
        if leases:
            ks.lanes.expect_leases(lane, tp, leases)
            self.metrics.handed_over.labels("taken").inc(len(leases))
            self.handed_over["taken"] += len(leases)
            self.recent_moves.appendleft(
                ClusterEvent(
                    at=time.time(),
                    kind="took-over",
                    partitions=1,
                    leases=len(leases),
                    plugin_key=ks.params.key,
                    partition=f"{tp.topic}:{tp.partition}",
                    peer=note.by,
                )
            )
            log.info(
                "took over %d leases of %s %s from %s", len(leases), ks.params.key, tp, note.by
            )

    async def _handovers(self) -> dict[str, bytes]:
        """The hand-over table, read once per change of partition ownership (notes are written
        before partitions move, and when an instance stops)."""
        topology = self.log.topology
        if self._notes[0] != topology:
            self._notes = (topology, await self.log.latest_values(self._handover_topic))
        return self._notes[1]

    async def hand_over(self, lost: frozenset[TopicPartition]) -> None:
        """Give up `lost` partitions (they move to another instance): their jobs are no longer
        offered here, their commits are stored, and their leases are noted for the next owner
        (a plugin at work keeps its job). Called by the log before the partitions move.

        Raises:
            UpstreamError: the log failed; the next owner re-offers the leased jobs.
        """
        wall, clock = time.time(), trio.current_time()
        commits: list[tuple[KeyState, dict[tuple[str, TopicPartition], Commit]]] = []
        notes: list[Outgoing] = []
        leases = 0
        # First every key lets go at once (no await: nothing more is handed out from them),
        # then the commits and notes are stored.
        for ks in self.states.values():
            if ks.params.ephemeral:
                continue  # it reads every partition, owned or not
            dirty: dict[tuple[str, TopicPartition], Commit] = {}
            for lane, group in ks.groups.items():
                for tp in sorted(lost & ks.lanes.cursors[lane].keys()):
                    held = [
                        LeaseNote(
                            note.offset,
                            note.attempt,
                            note.deadline - clock + wall,
                            note.leased_at - clock + wall,
                        )
                        for note in ks.lanes.leases_on(lane, tp)
                    ]
                    leases += len(held)
                    dirty[(lane, tp)] = ks.lanes.cursors[lane][tp].commit()
                    note = Handover(group=group, tp=tp, at=wall, by=self.instance, leases=held)
                    notes.append(
                        Outgoing(self._handover_topic, handover_key(group, tp), note.encode())
                    )
                    ks.lanes.unassign(lane, tp)
            if dirty:
                commits.append((ks, dirty))
        self.handed_over["given"] += leases
        self.recent_moves.appendleft(
            ClusterEvent(at=wall, kind="handed-over", partitions=len(lost), leases=leases)
        )
        # The notes first: they are what keeps plugins at work on their jobs; then every
        # key's commits in one call (the partitions' final positions here).
        await self.log.append(notes)
        by_group: dict[str, dict[TopicPartition, Commit]] = {}
        for ks, dirty in commits:
            for (lane, tp), commit in dirty.items():
                by_group.setdefault(ks.groups[lane], {})[tp] = commit
        await self.log.commit(by_group)
        if leases:
            self.metrics.handed_over.labels("given").inc(leases)
        log.info("handed over %d partitions with %d leases", len(lost), leases)

    def _topic_filter(self, params: ConsumeParams, lane: str) -> Callable[[str], bool]:
        if lane == Lane.REOFFER:
            return system_topic(self.prefix, "reoffer").__eq__
        if params.model != "binary":
            return system_topic(self.prefix, params.model).__eq__
        expedite = expedite_topic(self.prefix)
        if lane == Lane.EXPEDITE:
            return expedite.__eq__
        source_topics = _binary_topic_filter(self.prefix, params)
        if lane == Lane.LIVE:
            return source_topics
        # Historic also replays the expedite topic: expedited events live only there, and a new
        # plugin version must see them too (Go's historic misses them).
        return lambda topic: topic == expedite or source_topics(topic)

    def _lane_covering(self, tp: TopicPartition) -> str:
        """The lane that reads `tp` from now on, for historic's stopping point."""
        return Lane.EXPEDITE if tp.topic == expedite_topic(self.prefix) else Lane.LIVE

    def reads(self, ks: KeyState, at_least: int = 0) -> list[ReadRequest]:
        """The reads the key's lanes want, less those at the end of the log (which would
        return nothing: a lane that has caught up costs no read)."""
        end = self.log.known_end
        return [want for want in ks.lanes.reads_wanted(at_least) if want.offset < end(want.tp)]

    def forget_idle(self, now: float) -> list[str]:
        """Forget the ephemeral keys no poll has come for in `dispatch.ephemeral_idle_seconds`
        (`now` on Trio's clock); returns their keys."""
        idle = self.settings.ephemeral_idle_seconds
        gone = [
            key
            for key, ks in self.states.items()
            if ks.params.ephemeral and not ks.polls and now - ks.idle_since >= idle
        ]
        for key in gone:
            del self.states[key]
        if gone:
            log.debug("forgot %d idle watchers: %s", len(gone), ", ".join(gone))
        return gone

    def wake_all(self) -> None:
        """Wake every waiting long-poll (leases put back, partitions moved)."""
        for ks in self.states.values():
            ks.wake()

    async def commit(self, ks: KeyState) -> None:
        """Store the commits that moved. Raises `UpstreamError`; what failed is retried next."""
        dirty = ks.lanes.dirty_commits()
        if dirty:
            await self.store_commits(ks, dirty)

    @property
    def commits_in_background(self) -> bool:
        """Whether the commits that statuses (and active fetches) move are stored in the
        background (`commit_in_background`): on a shared log, unless the interval is 0. The
        embedded log stores them before answering (a restart reads no statuses back)."""
        return self.log.shared and self.settings.commit_interval_seconds > 0

    def commit_soon(self, ks: KeyState) -> None:
        """Have `commit_in_background` store the key's moved commits within
        `commit_interval_seconds` (gathered with those of every status meanwhile)."""
        self._commit_due[ks.params.key] = ks
        self._commit_asked.set()

    async def commit_in_background(self) -> None:
        """Store the commits `commit_soon` asked for, every `commit_interval_seconds` while
        there are some: all keys at once, each key's groups in one call. What fails stays
        dirty and is tried again the next time. Runs until cancelled (the dispatcher stores
        every commit when it stops, and a rebalance those of the partitions it moves)."""
        while True:
            await self._commit_asked.wait()
            await trio.sleep(self.settings.commit_interval_seconds)
            due, self._commit_due = self._commit_due, {}
            self._commit_asked = trio.Event()
            async with trio.open_nursery() as nursery:
                for key, ks in due.items():
                    if self.states.get(key) is ks:  # not reset meanwhile
                        nursery.start_soon(self._commit_or_retry, ks)

    async def _commit_or_retry(self, ks: KeyState) -> None:
        try:
            await self.commit(ks)
        except UpstreamError as exc:
            log.warning("cannot store the commits of %s for now: %s", ks.params.key, exc)
            self.commit_soon(ks)

    async def store_commits(
        self, ks: KeyState, dirty: dict[tuple[str, TopicPartition], Commit]
    ) -> None:
        """Store commits taken from `dirty_commits`; on failure (or cancellation) they are
        marked dirty again, for the next commit to carry. An ephemeral key stores none."""
        if ks.params.ephemeral:
            return
        by_group: dict[str, dict[TopicPartition, Commit]] = {}
        for (lane, tp), commit in dirty.items():
            by_group.setdefault(ks.groups[lane], {})[tp] = commit
        # One call for every group: the log stores commits in the order they were taken.
        try:
            await self.log.commit(by_group)
        except BaseException:
            ks.lanes.redirty(dirty)
            raise


def _binary_topic_filter(prefix: str, params: ConsumeParams) -> Callable[[str], bool]:
    sources = set(params.r_source)
    actions = set(params.r_action)

    def matches(topic: str) -> bool:
        parts = topic.split(".")
        return (
            len(parts) == 5
            and parts[0] == "azul"
            and parts[1] == prefix
            and parts[3] == "binary"
            and parts[2] != "system"
            and (not sources or parts[2] in sources)
            and (not actions or parts[4] in actions)
        )

    return matches


def _lanes(params: ConsumeParams) -> tuple[str, ...]:
    """The lanes a key reads: those it asked for, and for active binary keys the re-offer lane
    (jobs an admin put back), which the plugin key's flags do not show."""
    if params.active and params.model == "binary":
        return (Lane.REOFFER, *params.lanes)
    return params.lanes


def _untuple(value: Any) -> Any:
    """JSON lists back to the tuples `ConsumeParams` holds."""
    if isinstance(value, list):
        return tuple(_untuple(v) for v in value)
    return value
