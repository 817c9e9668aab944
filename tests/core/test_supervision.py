"""The supervisor's decisions on plain numbers: readiness, restarts and their delays, reloads,
stalled workers."""

from __future__ import annotations

from azuld.core.supervision import (
    RESTART_MAX_SECONDS,
    STABLE_SECONDS,
    AfterExit,
    Fleet,
    parse_notify,
)


def started_fleet(count: int = 2, now: float = 0.0) -> Fleet:
    fleet = Fleet(count)
    for index in range(count):
        fleet.started(index, 100 + index, now)
    return fleet


def test_parse_notify() -> None:
    assert parse_notify(b"READY=1\nSTATUS=serving on x=y\nnonsense") == {
        "READY": "1",
        "STATUS": "serving on x=y",
    }


def test_ready_once_every_worker_is() -> None:
    fleet = started_fleet()
    fleet.said(0, b"READY=1", 1.0)
    assert not fleet.all_ready()
    assert not fleet.ever_ready
    fleet.said(1, b"WATCHDOG=1", 1.0)
    assert not fleet.all_ready()
    fleet.said(1, b"READY=1\nSTATUS=serving\nMAINPID=101", 2.0)
    assert fleet.all_ready()
    assert fleet.ever_ready
    assert fleet.slots[1].status == "serving"
    assert fleet.summary() == "2/2 workers ready"


def test_an_exit_before_every_worker_was_ready_gives_up() -> None:
    fleet = started_fleet()
    fleet.said(0, b"READY=1", 1.0)
    assert fleet.exited(1, 2.0) == AfterExit(None, give_up=True)


def test_restarts_back_off_while_a_worker_dies_young() -> None:
    fleet = started_fleet()
    for index in (0, 1):
        fleet.said(index, b"READY=1", 1.0)
    now, delays = 100.0, []
    for _ in range(8):
        after = fleet.exited(1, now)
        assert not after.give_up
        assert after.restart_in is not None
        delays.append(after.restart_in)
        now += after.restart_in
        fleet.started(1, 200, now)
        now += 5  # dies young again
    assert delays == [1, 1, 2, 4, 8, 16, RESTART_MAX_SECONDS, RESTART_MAX_SECONDS]
    assert fleet.slots[1].restarts == 8
    assert not fleet.all_ready()  # restarted, not ready yet
    assert fleet.summary() == "1/2 workers ready, 8 restarts"
    # A worker that lived long enough starts the count again.
    fleet.started(1, 201, now)
    assert fleet.exited(1, now + STABLE_SECONDS) == AfterExit(1.0)


def test_no_restart_once_stopping() -> None:
    fleet = started_fleet()
    for index in (0, 1):
        fleet.said(index, b"READY=1", 1.0)
    fleet.stop()
    assert fleet.exited(0, 5.0) == AfterExit(None)
    # Also during start-up: a stop is not a failed start.
    starting = started_fleet()
    starting.stop()
    assert starting.exited(0, 1.0) == AfterExit(None)


def test_a_reload_is_done_when_every_ready_worker_answered() -> None:
    fleet = started_fleet(3)
    fleet.said(0, b"READY=1", 1.0)
    fleet.said(1, b"READY=1", 1.0)
    # Worker 2 is still starting: it is not signalled, and not waited for.
    assert [slot.index for slot in fleet.reload()] == [0, 1]
    assert not fleet.reload_done()
    fleet.said(0, b"RELOADING=1\nMONOTONIC_USEC=5", 2.0)
    fleet.said(0, b"READY=1", 2.0)
    assert not fleet.reload_done()
    fleet.exited(1, 3.0)  # died mid-reload: nothing to wait for
    assert fleet.reload_done()
    assert not fleet.reload_done()  # reported once


def test_stalled_workers() -> None:
    fleet = started_fleet(3)
    fleet.said(0, b"READY=1", 10.0)
    fleet.said(1, b"READY=1", 10.0)
    fleet.said(0, b"WATCHDOG=1", 25.0)
    # Worker 1 last pinged at 10, worker 2 is still starting (not stalled: not ready).
    assert [slot.index for slot in fleet.stalled(35.0, 20.0)] == [1]
    assert fleet.stalled(29.0, 20.0) == []
    fleet.exited(1, 36.0)
    assert fleet.stalled(40.0, 20.0) == []  # exited: the restart is the supervisor's business


def test_messages_of_an_empty_slot_are_ignored() -> None:
    fleet = started_fleet()
    fleet.said(0, b"READY=1", 1.0)
    fleet.said(1, b"READY=1", 1.0)
    fleet.exited(1, 100.0)
    fleet.said(1, b"READY=1", 101.0)  # a late datagram of the process that exited
    assert not fleet.slots[1].ready
