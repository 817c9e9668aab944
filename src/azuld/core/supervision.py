"""What `azuld serve --processes N`'s supervisor knows of its workers, and what it decides.

Sans-I/O: the supervisor (`azuld.supervisor`) tells a `Fleet` what happened, with the time: a
worker started, said something on its notify socket (sd_notify lines: `READY=1`, `WATCHDOG=1`,
`RELOADING=1`), exited. It asks back: is every worker ready (then systemd gets `READY=1`), is a
reload done, which workers stopped ticking (then the watchdog is not pinged), and what to do
about a worker that exited: nothing (the supervisor was told to stop), give up (it never got as
far as serving, so a restart would fail the same way: a port in use, Kafka unreachable), or
restart it after a delay that doubles while it keeps dying young.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RESTART_FIRST_SECONDS",
    "RESTART_MAX_SECONDS",
    "STABLE_SECONDS",
    "AfterExit",
    "Fleet",
    "Slot",
    "parse_notify",
]

# The first restart of a worker that died waits this long; each quick death doubles it, up to
# the maximum. A worker that lived `STABLE_SECONDS` starts the count again.
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
STABLE_SECONDS = 60.0


def parse_notify(message: bytes) -> dict[str, str]:
    """`b"READY=1\\nSTATUS=serving"` → `{"READY": "1", "STATUS": "serving"}` (lines without a
    `=` are ignored, as systemd does)."""
    fields: dict[str, str] = {}
    for line in message.decode(errors="replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name] = value
    return fields


@dataclass(slots=True)
class Slot:
    """One worker place: the process in it now (if any) and its history."""

    index: int
    pid: int | None = None
    started_at: float = 0.0
    ready: bool = False
    reloading: bool = False
    last_ping: float = 0.0  # READY=1 or WATCHDOG=1
    quick_deaths: int = 0  # in a row, each after less than STABLE_SECONDS
    restarts: int = 0
    status: str = ""  # the worker's last STATUS=


@dataclass(frozen=True, slots=True)
class AfterExit:
    """What to do about a worker that exited: `restart_in` seconds, or nothing (`None`);
    `give_up`: stop every worker and fail (it exited before all were ever ready)."""

    restart_in: float | None
    give_up: bool = False


class Fleet:
    """The workers of one supervisor, by slot index (0 to count - 1)."""

    def __init__(self, count: int) -> None:
        self.slots = [Slot(index) for index in range(count)]
        self.stopping = False
        self.ever_ready = False  # every worker was ready at once, at least once
        self.reload_pending = False

    def started(self, index: int, pid: int, now: float) -> None:
        slot = self.slots[index]
        slot.pid, slot.started_at, slot.ready, slot.reloading = pid, now, False, False
        slot.status = "starting"

    def said(self, index: int, message: bytes, now: float) -> None:
        """A notify datagram from the worker in `index` (only ever from its current process: each
        process gets a socket of its own)."""
        slot = self.slots[index]
        if slot.pid is None:
            return
        fields = parse_notify(message)
        if "STATUS" in fields:
            slot.status = fields["STATUS"]
        if fields.get("RELOADING") == "1":
            slot.reloading = True
        if fields.get("READY") == "1":
            slot.ready, slot.reloading, slot.last_ping = True, False, now
            if self.all_ready():
                self.ever_ready = True
        if fields.get("WATCHDOG") == "1":
            slot.last_ping = now

    def exited(self, index: int, now: float) -> AfterExit:
        """The worker in `index` is gone (its exit status is the caller's to log)."""
        slot = self.slots[index]
        lived = now - slot.started_at
        slot.pid, slot.ready, slot.reloading, slot.status = None, False, False, "exited"
        if self.stopping:
            return AfterExit(None)
        if not self.ever_ready:
            return AfterExit(None, give_up=True)
        slot.quick_deaths = 0 if lived >= STABLE_SECONDS else slot.quick_deaths + 1
        slot.restarts += 1
        delay = RESTART_FIRST_SECONDS * 2 ** max(0, slot.quick_deaths - 1)
        return AfterExit(min(RESTART_MAX_SECONDS, delay))

    def stop(self) -> None:
        """From now on no worker is restarted."""
        self.stopping = True

    def all_ready(self) -> bool:
        return all(slot.ready for slot in self.slots)

    def running(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.pid is not None]

    def reload(self) -> list[Slot]:
        """The workers to pass a reload (SIGHUP) on to: those ready, the others have not set up
        their signal handling yet (and read the config file as they start). The reload is done
        once each of them has said `READY=1` again (or exited)."""
        self.reload_pending = True
        ready = [slot for slot in self.slots if slot.ready]
        for slot in ready:
            slot.reloading = True
        return ready

    def reload_done(self) -> bool:
        """True once, when the pending reload has been answered by every worker."""
        if self.reload_pending and not any(slot.reloading for slot in self.slots):
            self.reload_pending = False
            return True
        return False

    def stalled(self, now: float, timeout_seconds: float) -> list[Slot]:
        """Ready workers whose last ping is older than `timeout_seconds` (their dispatch loop
        stopped ticking). Workers starting or being restarted are not stalled: the restart
        delays and the workers' own start-up deadlines bound those."""
        return [
            slot
            for slot in self.slots
            if slot.pid is not None and slot.ready and now - slot.last_ping > timeout_seconds
        ]

    def summary(self) -> str:
        ready = sum(slot.ready for slot in self.slots)
        restarts = sum(slot.restarts for slot in self.slots)
        text = f"{ready}/{len(self.slots)} workers ready"
        return f"{text}, {restarts} restarts" if restarts else text
