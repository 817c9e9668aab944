"""`max-security` checkers: the `SecurityCheck` port (`azuld.ports`), two ways.

- `ModelCheck` decides with the deployment's label model (`azuld.core.security`): synchronous,
  microseconds, so `decided` always answers.
- `CommandCheck` asks an external command, `<command...> <clearance> <label>` (by default
  `azul-security can-access`, as the Go dispatcher runs it), which prints `true` or `false`. Each
  answer is cached per (clearance, label) pair, bounded. A run that fails, prints anything else,
  or outlasts `command_timeout_seconds` denies (fail closed) and is not asked again for that pair
  for `command_retry_seconds`; `BadSecurity…` (azul-security's unreadable label) is a cached
  `false`. At most `command_concurrency` runs at once, and concurrent asks for one pair share a run.

`decided` never waits, so a fetch can judge most events at once and check the undecided ones in
the background (see the enforcement notes in the report of issue #17).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from azuld.core.security import AccessDecisions, BoundedCache, EventLabel, LabelModel
from azuld.errors import ConfigError, UnreadableLabel
from azuld.ports import SecurityCheck
from azuld.settings import SecuritySettings

__all__ = ["CommandCheck", "ModelCheck", "label_model", "open_security_check"]

log = logging.getLogger(__name__)

# Output kept for a log line when a command misbehaves.
_SHOWN_BYTES = 200


class ModelCheck:
    """Decisions of the configured label model (see `azuld.core.security`)."""

    def __init__(self, decisions: AccessDecisions) -> None:
        self.decisions = decisions
        self._readable: BoundedCache[str, bool] = BoundedCache(decisions.max_entries)

    def check_clearance(self, clearance: str) -> None:
        """Raises:
        UnreadableLabel: the model cannot read `clearance`.
        """
        if clearance and self._readable.get(clearance) is None:
            self.decisions.model.parse_clearance(clearance)
            self._readable.put(clearance, True)

    def decided(self, clearance: str, label: EventLabel) -> bool:
        return self.decisions.decide(clearance, label)

    async def can_access(self, clearance: str, label: EventLabel) -> bool:
        """Cancellation: a checkpoint; nothing else to cancel."""
        await trio.lowlevel.checkpoint()
        return self.decisions.decide(clearance, label)


async def _kill(process: trio.Process) -> None:
    process.kill()  # a check that timed out gets no grace: it holds a slot others wait for


class CommandCheck:
    """Decisions of an external `can-access` command (see the module notes)."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        timeout_seconds: float,
        concurrency: int = 4,
        retry_seconds: float = 30.0,
        max_entries: int = 4096,
    ) -> None:
        if not command:
            raise ConfigError(
                "security.command: empty (expected e.g. ['azul-security', 'can-access'])"
            )
        self.command = tuple(command)
        self.timeout_seconds = timeout_seconds
        self.retry_seconds = retry_seconds
        self._limiter = trio.CapacityLimiter(concurrency)
        self._answers: BoundedCache[tuple[str, str], bool] = BoundedCache(max_entries)
        # Pairs whose last run failed, with the time they may be asked again.
        self._failed: BoundedCache[tuple[str, str], float] = BoundedCache(max_entries)
        self._running: dict[tuple[str, str], trio.Event] = {}
        self.runs = 0  # commands started, for tests and metrics

    def check_clearance(self, clearance: str) -> None:
        """Nothing to tell without the model: an unreadable clearance is denied every event (the
        command answers `BadSecurity…`), as in Go."""

    def _known(self, pair: tuple[str, str]) -> bool | None:
        answer = self._answers.get(pair)
        if answer is not None:
            return answer
        retry_at = self._failed.get(pair)
        if retry_at is not None:
            if trio.current_time() < retry_at:
                return False
            self._failed.pop(pair)
        return None

    def decided(self, clearance: str, label: EventLabel) -> bool | None:
        """The cached decision, or `None` if a part of `label` has not been asked yet. An empty
        clearance or label is not checked (`True`), as in Go."""
        if not clearance:
            return True
        decision: bool | None = True
        for part in label:
            known = self._known((clearance, part))
            if known is False:
                return False
            if known is None:
                decision = None
        return decision

    async def can_access(self, clearance: str, label: EventLabel) -> bool:
        """Ask the command about each part of `label` not yet known; all must be `true`.

        Cancellation: safe. A run cancelled with its caller is killed, and whoever shares it
        starts its own.
        """
        if not clearance:
            await trio.lowlevel.checkpoint()
            return True
        for part in label:
            if not await self._part(clearance, part):
                return False
        await trio.lowlevel.checkpoint()
        return True

    async def _part(self, clearance: str, part: str) -> bool:
        pair = (clearance, part)
        while True:
            known = self._known(pair)
            if known is not None:
                return known
            running = self._running.get(pair)
            if running is None:
                break
            await running.wait()  # then read what it left (or start afresh if it was cancelled)
        done = self._running[pair] = trio.Event()
        try:
            answer = await self._run(clearance, part)
        finally:
            del self._running[pair]
            done.set()
        if answer is None:
            self._failed.put(pair, trio.current_time() + self.retry_seconds)
            return False
        self._answers.put(pair, answer)
        return answer

    async def _run(self, clearance: str, part: str) -> bool | None:
        """One run of the command: its answer, or `None` if it failed or timed out."""
        argv = [*self.command, clearance, part]
        async with self._limiter:
            self.runs += 1
            try:
                with trio.fail_after(self.timeout_seconds):
                    result = await trio.run_process(
                        argv,
                        capture_stdout=True,
                        capture_stderr=True,
                        check=False,
                        deliver_cancel=_kill,
                    )
            except trio.TooSlowError:
                log.warning(
                    "security check %r timed out after %ss: denied (retried after %ss)",
                    argv,
                    self.timeout_seconds,
                    self.retry_seconds,
                )
                return None
            except OSError as exc:
                log.warning("security check %r could not start: %s: denied", argv, exc)
                return None
        output = result.stdout.decode(errors="replace").strip()
        if result.returncode == 0:
            answer = output.lower()
            if answer == "true":
                return True
            if answer == "false":
                return False
            if answer.startswith("badsecurity"):
                log.warning("security check %r: unreadable label: %s", argv, output)
                return False
        log.warning(
            "security check %r failed (exit %s): stdout %r stderr %r: denied",
            argv,
            result.returncode,
            output[:_SHOWN_BYTES],
            result.stderr.decode(errors="replace").strip()[:_SHOWN_BYTES],
        )
        return None


def label_model(settings: SecuritySettings) -> LabelModel:
    """The label model of `[security]`.

    Raises:
        ConfigError: naming the `security.*` key at fault.
    """
    return LabelModel(
        classifications=settings.classifications,
        caveats=settings.caveats,
        releasability=settings.releasability,
        releasability_prefix=settings.releasability_prefix,
        releasability_origin=settings.releasability_origin,
        releasable_from=settings.releasable_from,
        markings=settings.markings,
        enforced_markings=settings.enforced_markings,
    )


def open_security_check(settings: SecuritySettings) -> SecurityCheck:
    """The checker `[security] checker` names, built and checked at start-up.

    Raises:
        ConfigError: a bad `security.*` setting (including a `default_label` the model cannot
            read).
    """
    # Ranges are checked where settings are read (azuld.settings); here, what the model needs.
    if settings.checker == "command":
        return CommandCheck(
            settings.command,
            timeout_seconds=settings.command_timeout_seconds,
            concurrency=settings.command_concurrency,
            retry_seconds=settings.command_retry_seconds,
            max_entries=settings.cache_entries,
        )
    model = label_model(settings)
    if settings.default_label:
        try:
            model.parse(settings.default_label)
        except UnreadableLabel as exc:
            raise ConfigError(f"security.default_label: {exc}") from None
    return ModelCheck(AccessDecisions(model, max_entries=settings.cache_entries))
