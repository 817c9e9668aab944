"""The background half of the dispatcher: what `Dispatcher.run` starts beside the requests.

At start-up the replay cache is loaded; then, until cancelled: the log follower below wakes the
long-polls the log's changes concern, the lease reaper (`leases.py`) expires leases, the
`max-security` checks that fetches deferred are decided (`security.py`), and on a log other
instances share, the status and replay-cache followers (`statuses.py`, `replay.py`) apply what the
other instances post, and the commits that statuses moved are stored in the background
(`KeyRegistry.commit_in_background`: gathered for `dispatch.commit_interval_seconds`, so a status
post waits for its status to be stored, not for a commit).

On a shared log (Kafka), partitions move between live instances. Before they do, the log calls
`KeyRegistry.hand_over` (their leases are noted for the next owner, so plugins at work keep their
jobs). At start-up an instance remembers the final statuses stored in the last
`dispatch.finished_memory_seconds`, so that a partition it takes over from an instance that is
gone offers nothing that was finished. An instance that stops is gone: its leased jobs are
offered again at once by whoever holds their partitions next (itself, started again), as new
attempts; a plugin that still reports one is answered, and the first final status is the one
stored. Its commits are stored on the way out, so that they show how far its hand-outs got.
"""

from __future__ import annotations

import logging
import secrets

import trio

from azuld.dispatch.keys import KeyRegistry
from azuld.dispatch.leases import Leases
from azuld.dispatch.replay import Replay
from azuld.dispatch.security import Security
from azuld.dispatch.statuses import Statuses
from azuld.errors import UpstreamError
from azuld.ports import EventLog

__all__ = ["Background"]

# How long a stopping instance spends storing its commits.
COMMIT_ON_STOP_SECONDS = 5.0
# How often idle watchers are looked for (`dispatch.ephemeral_idle_seconds` is at least 1).
FORGET_EVERY_SECONDS = 1.0

log = logging.getLogger("azuld.dispatcher")


class Background:
    """The dispatcher's background tasks, run in one nursery."""

    def __init__(
        self,
        log: EventLog,
        registry: KeyRegistry,
        replay: Replay,
        statuses: Statuses,
        leases: Leases,
        security: Security,
    ) -> None:
        self.log = log
        self.registry = registry
        self.replay = replay
        self.statuses = statuses
        self.leases = leases
        self.security = security

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the replay cache, then follow the log, reap leases and decide deferred
        `max-security` checks until cancelled.

        Raises:
            UpstreamError: the replay cache could not be loaded (before `started`).
        """
        secret = self.registry.settings.job_id_secret
        self.registry.ids.secret = (
            secret.encode()
            if secret
            else await self.log.first_value("job-id-secret", secrets.token_hex(32).encode())
        )
        await self.replay.load()
        # What was stored lately (a status whose answer a kill cut off is posted again).
        await self.statuses.remember_recent()
        shared = self.log.shared
        if shared:
            self.log.on_revoke(self.registry.hand_over)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow_log)
                if shared:
                    # Statuses and replay entries other instances add. On a log only this
                    # process writes, they would all be our own, applied already: following them
                    # would decode and apply every status twice.
                    nursery.start_soon(self.statuses.follow)
                    nursery.start_soon(self.replay.follow)
                    nursery.start_soon(self.registry.commit_in_background)
                nursery.start_soon(self.leases.reap)
                nursery.start_soon(self._forget_idle_watchers)
                nursery.start_soon(self.security.run)
                task_status.started()
        finally:
            if shared:
                self.log.on_revoke(None)
            with trio.CancelScope(shield=True), trio.move_on_after(COMMIT_ON_STOP_SECONDS):
                await self._commit_everything()

    async def _commit_everything(self) -> None:
        """Store every key's position as it stands, hand-outs included: the next owner offers
        what this instance leased as new attempts."""
        for ks in list(self.registry.states.values()):
            try:
                await self.registry.store_commits(ks, ks.lanes.all_commits())
            except UpstreamError as exc:
                log.warning("could not store the commits of %s on stopping: %s", ks.params.key, exc)

    async def _forget_idle_watchers(self) -> None:
        """Forget ephemeral keys (watchers) no poll has come for in a while, until cancelled."""
        while True:
            await trio.sleep(FORGET_EVERY_SECONDS)
            self.registry.forget_idle(trio.current_time())

    async def _follow_log(self) -> None:
        """Wake the long-polls the log's changes concern: those of keys with something to read
        now (most appends are statuses and results, which concern few keys: waking every
        waiting poll for each of them would cost a task switch and a lap of
        `Fetcher._take_until` apiece). New partitions, or partitions moving to or from this
        instance, wake them all."""
        topology = self.log.topology
        while True:
            generation = self.log.generation
            await self.log.wait_for_change(generation)
            if self.log.topology != topology:
                topology = self.log.topology
                self.registry.wake_all()
                continue
            for ks in self.registry.states.values():
                if ks.polls and (ks.lanes.queued or self.registry.reads(ks)):
                    ks.wake()
