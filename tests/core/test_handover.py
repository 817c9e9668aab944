"""Hand-over notes: encoded and read back, times moved to the next owner's clock."""

from __future__ import annotations

from azuld.core.cursor import LeaseNote, TopicPartition
from azuld.core.handover import Handover, handover_key

TP = TopicPartition("azul.t.s.binary.sourced", 2)


def test_a_note_round_trips_and_foreign_values_are_none() -> None:
    note = Handover(
        group="t-azul-P-live",
        tp=TP,
        at=1000.0,
        by="host-1",
        leases=[LeaseNote(5, 1, 1100.0, 990.0)],
    )
    assert Handover.decode(note.encode()) == note
    assert Handover.decode(b"not json") is None
    assert Handover.decode(b'{"group": 1}') is None
    assert handover_key("g", TP) == "g|azul.t.s.binary.sourced|2"


def test_running_leases_move_to_the_next_owners_clock() -> None:
    note = Handover(
        group="g",
        tp=TP,
        at=1000.0,
        by="a",
        leases=[LeaseNote(5, 0, 1100.0, 990.0), LeaseNote(6, 2, 1001.0, 900.0)],
    )
    # At wall time 1050 the second lease has ended; the other keeps its 50 s left, on a clock
    # that reads 7 at that moment.
    assert note.clocked(wall_now=1050.0, clock_now=7.0) == [LeaseNote(5, 0, 57.0, -53.0)]
