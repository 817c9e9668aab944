"""Job states and the moves between them: the seed's diagram as a table.

    Kafka → Dispatcher → (Skip | Plugin)
          → (Completed | Optout | Exception | Critical Failure) → Store

A job is one event offered to one plugin key. It is QUEUED when read from the log, then either
SKIPPED by a filter or LEASED to a plugin. A lease ends with the plugin's final status (COMPLETED,
OPTED_OUT or EXCEPTION), or, when it expires, goes back to QUEUED to be offered again; after the
last retry the dispatcher ends it as CRITICAL_FAILURE with an `error-timeout` status of its own.
Every ending is STORED once its status (or, for a skip, nothing) is durable and the offset is
finished. An illegal move raises `InvalidTransition` and leaves the state as it was.
"""

from __future__ import annotations

import enum

from azuld.errors import InvalidTransition
from azuld.models.events import COMPLETED_STATUSES

__all__ = ["TRANSITIONS", "JobState", "ending_for_status", "transition"]


class JobState(enum.Enum):
    QUEUED = "queued"
    SKIPPED = "skipped"
    LEASED = "leased"
    COMPLETED = "completed"
    OPTED_OUT = "opted-out"
    EXCEPTION = "exception"
    CRITICAL_FAILURE = "critical-failure"
    STORED = "stored"

    # Members are singletons: hash them by identity, in C. `Enum.__hash__` is a Python method
    # (`hash(self._name_)`), and states are hashed several times per job (the table below,
    # per-ending counters).
    __hash__ = object.__hash__


_ENDINGS = frozenset(
    {
        JobState.SKIPPED,
        JobState.COMPLETED,
        JobState.OPTED_OUT,
        JobState.EXCEPTION,
        JobState.CRITICAL_FAILURE,
    }
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.SKIPPED, JobState.LEASED}),
    # LEASED → LEASED is a heartbeat; LEASED → QUEUED an expired lease put back for another try.
    JobState.LEASED: frozenset(
        {
            JobState.LEASED,
            JobState.QUEUED,
            JobState.COMPLETED,
            JobState.OPTED_OUT,
            JobState.EXCEPTION,
            JobState.CRITICAL_FAILURE,
        }
    ),
    **{ending: frozenset({JobState.STORED}) for ending in _ENDINGS},
    JobState.STORED: frozenset(),
}


def transition(current: JobState, target: JobState) -> JobState:
    """Return `target` if the table allows `current → target`.

    Raises:
        InvalidTransition: the move is not in `TRANSITIONS`.
    """
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(f"a job cannot go from {current.value} to {target.value}")
    return target


def ending_for_status(status: str) -> JobState | None:
    """The job state a plugin's final status ends in; `None` for progress statuses."""
    if status in COMPLETED_STATUSES:
        return JobState.COMPLETED
    if status == "opt-out":
        return JobState.OPTED_OUT
    if status.startswith("error-"):
        return JobState.EXCEPTION
    return None
