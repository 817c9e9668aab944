"""What a scenario is (`Scenario`, made with `@fault`) and what one run of it found (`Outcome`)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.scenarios.profile import (
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    MAX_JOB_SECONDS,
    MAX_POLLS_PER_KEY,
    Profile,
)


class Unexpected(Exception):
    """azuld answered something a scenario cannot continue from."""


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    """One run of a scenario.

    * `checks`: the documented behaviour, one named check each (the tests assert they all hold);
    * `served`: what was measured meanwhile (the good client's requests and latencies, how long
      recoveries took): reported, never asserted;
    * `lost`: computed afterwards, never assumed: every 200-acknowledged write is looked for again;
    * `notes`: what azuld answered where the docs leave a choice (e.g. 507 or 503), verbatim.
    """

    scenario: str
    checks: list[Check] = field(default_factory=list)
    lost: int = 0
    lost_detail: list[str] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: str = ""  # why the scenario could not run here (e.g. no way to make a small disk)

    def check(self, what: str, ok: object, detail: object = "") -> bool:
        self.checks.append(Check(what, bool(ok), "" if ok else str(detail)[:2000]))
        return bool(ok)

    def lose(self, count: int, what: str) -> None:
        if count:
            self.lost += count
            self.lost_detail.append(f"{count} {what}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    @property
    def ok(self) -> bool:
        return not self.skipped and self.lost == 0 and all(c.ok for c in self.checks)

    def explain(self) -> str:
        lines = [f"scenario {self.scenario}: {'ok' if self.ok else 'FAILED'}"]
        if self.skipped:
            lines.append(f"  skipped: {self.skipped}")
        lines += [f"  FAILED {c.what}: {c.detail}" for c in self.checks if not c.ok]
        lines += [f"  LOST {d}" for d in self.lost_detail]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"  served meanwhile: {self.served}")
        return "\n".join(lines)


Body = Callable[[Outcome, Path, Profile], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """One fault: its key and title in the report, what was tried (a format string over the
    `Profile` fields and the config), the coroutine that sets it up, injects it and checks the
    outcome, and the test in tests/test_faults.py that asserts it."""

    key: str
    title: str
    tried: str
    body: Body
    test: str

    async def run(self, workdir: Path, profile: Profile) -> Outcome:
        """A fresh `Outcome` filled in by the body, timed. Exceptions propagate."""
        outcome = Outcome(self.key)
        began = time.monotonic()
        await self.body(outcome, workdir, profile)
        outcome.seconds = time.monotonic() - began
        return outcome

    def describe(self, profile: Profile) -> str:
        return self.tried.format(
            **asdict(profile),
            max_polls_per_key=MAX_POLLS_PER_KEY,
            lease_seconds=LEASE_SECONDS,
            max_job_seconds=MAX_JOB_SECONDS,
            max_attempts=MAX_ATTEMPTS,
        )


def fault(*, key: str, title: str, tried: str, test: str) -> Callable[[Body], Scenario]:
    """Make the decorated body a `Scenario`."""

    def wrap(body: Body) -> Scenario:
        return Scenario(key, title, tried, body, test)

    return wrap


# -- measurements ---------------------------------------------------------------------------


def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def latency_summary(latencies: list[float], errors: int = 0) -> dict[str, Any]:
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
    }
