"""What became of each file of an `azuld submit`: published, or why not. Bookkeeping only (no
I/O, no clock), so the report at the end can name every file that was not published, whatever
stopped the run.

A file goes waiting → uploading → uploaded → publishing → published; or to failed, with the
daemon's reason, from uploading or publishing. When the run stops early (a signal, an outage that
lasted too long) the files still on the way get a reason from the state they were left in.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Item", "Ledger", "State"]


@dataclass(frozen=True, slots=True)
class Item:
    """A file to submit: `index` (from 1) in the order given, and the name it is published as."""

    index: int
    path: Path
    filename: str


class State(enum.Enum):
    WAITING = "waiting"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    FAILED = "failed"


# Why a file is not published when the run stopped (for `stop`) with the file in this state.
_LEFT_IN = {
    State.WAITING: "not uploaded ({stop})",
    State.UPLOADING: "upload interrupted ({stop})",
    State.UPLOADED: "uploaded, not published ({stop})",
    State.PUBLISHING: (
        "publish interrupted ({stop}); the daemon may have stored it: submit again to be sure"
    ),
}


class Ledger:
    """The state of each of `items` (all waiting at first)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self.items = list(items)
        self._states = {item.index: State.WAITING for item in self.items}
        self._reasons: dict[int, str] = {}
        self.published = 0

    def state(self, item: Item) -> State:
        return self._states[item.index]

    def move(self, items: Iterable[Item], state: State) -> None:
        for item in items:
            if self._states[item.index] is State.PUBLISHED:
                continue  # published stays published (a retried post cannot undo it)
            self._states[item.index] = state
            if state is State.PUBLISHED:
                self.published += 1

    def fail(self, item: Item, reason: str) -> None:
        if self._states[item.index] is not State.PUBLISHED:
            self._states[item.index] = State.FAILED
            self._reasons[item.index] = reason

    def unpublished(self, stop: str) -> list[tuple[Item, str]]:
        """Every file not published, in the order given, with why (`stop`: what ended the run
        early, for the files still on the way)."""
        left = []
        for item in self.items:
            state = self._states[item.index]
            if state is State.FAILED:
                left.append((item, self._reasons[item.index]))
            elif state is not State.PUBLISHED:
                left.append((item, _LEFT_IN[state].format(stop=stop or "stopped")))
        return left
