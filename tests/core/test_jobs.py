"""The job-state table: allowed moves pass, every other move raises and changes nothing."""

from __future__ import annotations

import itertools

import pytest

from azuld.core.jobs import TRANSITIONS, JobState, ending_for_status, transition
from azuld.errors import InvalidTransition

ALL_MOVES = list(itertools.product(JobState, JobState))


@pytest.mark.parametrize(("current", "target"), ALL_MOVES)
def test_transition_table(current: JobState, target: JobState) -> None:
    if target in TRANSITIONS[current]:
        assert transition(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            transition(current, target)


def test_every_ending_is_stored() -> None:
    for ending in (
        JobState.SKIPPED,
        JobState.COMPLETED,
        JobState.OPTED_OUT,
        JobState.EXCEPTION,
        JobState.CRITICAL_FAILURE,
    ):
        assert TRANSITIONS[ending] == {JobState.STORED}
    assert TRANSITIONS[JobState.STORED] == frozenset()


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("completed", JobState.COMPLETED),
        ("completed-empty", JobState.COMPLETED),
        ("completed-with-errors", JobState.COMPLETED),
        ("opt-out", JobState.OPTED_OUT),
        ("error-exception", JobState.EXCEPTION),
        ("error-timeout", JobState.EXCEPTION),
        ("heartbeat", None),
        ("dequeued", None),
    ],
)
def test_ending_for_status(status: str, state: JobState | None) -> None:
    assert ending_for_status(status) is state


def test_states_hash_as_the_singletons_they_are() -> None:
    # Hashed by identity (in C): sets and dict keys behave as before.
    assert {JobState.LEASED, JobState.LEASED} == {JobState.LEASED}
    assert len(set(JobState)) == len(JobState)
    assert {JobState.COMPLETED: 1}[JobState("completed")] == 1
    assert JobState.QUEUED != "queued"
