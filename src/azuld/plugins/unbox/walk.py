"""The member walk every extractor shares: it takes an archive's entries in order, applies the
guards to each (count, directories, names, links and special entries, declared size, empty),
reads the ones that pass with the passwords in turn under the byte and ratio budget, and
records what came out and what was skipped, and why.

An extractor describes each entry as an `Entry` and reads one member with one password
(`ReadMember`), translating its library's errors into `WrongPassword` (try the next one) or
`MemberFailed` (this member is done for). Anything else it raises ends the walk and is the
extractor's to handle (a tar stream that breaks, say).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from azuld.plugins.unbox.guards import (
    Budget,
    SkipMember,
    StopArchive,
    display,
    oversize,
    safe_member_path,
    truncation,
)
from azuld.plugins.unbox.limits import Limits

__all__ = [
    "Context",
    "Entry",
    "Extraction",
    "Member",
    "MemberFailed",
    "MemberWalk",
    "ReadMember",
    "WrongPassword",
]


@dataclass(slots=True)
class Member:
    filename: str
    data: bytes
    relationship: dict[str, str]


@dataclass(slots=True)
class Extraction:
    """What came out of one archive."""

    container: str
    relationship: dict[str, str]
    members: list[Member] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    entries: int = 0
    entries_exact: bool = True
    truncated: str = ""
    passwords: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    total_bytes: int = 0
    backend_missing: bool = False
    password_failures: int = 0

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append(f"{display(name)}: {reason}")

    def add(self, filename: str, data: bytes, password: str | None = None) -> None:
        relationship = dict(self.relationship)
        if password is not None:
            relationship["password"] = password
            if password not in self.passwords:
                self.passwords.append(password)
        self.members.append(Member(filename, data, relationship))

    def bad(self, message: str) -> None:
        if message not in self.malformed:
            self.malformed.append(message)


@dataclass(slots=True)
class Context:
    """One extraction's limits, budget and the name of the archive itself."""

    limits: Limits
    budget: Budget
    parent_name: str

    @property
    def passwords(self) -> tuple[str, ...]:
        return self.limits.passwords


@dataclass(slots=True)
class Entry:
    """One entry of an archive, as the guards see it.

    ``link`` is the kind of a link entry ("symlink", "hardlink", ...; ``target`` where the
    archive says), ``special`` the kind of any other non-regular entry ("fifo", ...). ``size``
    is the uncompressed size the header declares (None: not to be trusted), ``compressed`` what
    the member's packed bytes are for the ratio guard (None: the stream is measured instead).
    ``source`` is the extractor's own handle on the entry.
    """

    name: str
    source: Any = None
    is_dir: bool = False
    link: str = ""
    target: str | None = None
    special: str = ""
    size: int | None = None
    compressed: int | None = None
    encrypted: bool = False


class WrongPassword(Exception):
    """This password does not open the member; the walk tries the next."""


class MemberFailed(Exception):
    """The member cannot be read, whatever the password: skipped for `reason`.

    `malformed` (if any) becomes a `malformed` feature; `backend_missing` marks a rar member
    that needs the missing `unar` tool.
    """

    def __init__(self, reason: str, *, malformed: str = "", backend_missing: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.malformed = malformed
        self.backend_missing = backend_missing


# Reads one member with one password (None: unencrypted) under `Context.budget`.
ReadMember = Callable[[Entry, str | None], bytes]


class MemberWalk:
    """One pass over one archive's entries, recording into `result`.

    `current` names the member being read while it is read, so that an extractor that sees the
    walk end in an error can say which member broke.
    """

    def __init__(self, result: Extraction, context: Context, working: Iterable[str] = ()) -> None:
        self.result = result
        self.context = context
        # Passwords that opened something, most recent first: tried first on the next member.
        self.working = list(working)
        self.current = ""

    def admitted(
        self, entries: Iterable[Entry], *, listed: int | None
    ) -> Iterator[tuple[Entry, str]]:
        """The entries the guards let through, with their safe paths; the rest are recorded.

        ``listed`` is the entry count the archive's directory gives (None for a stream, where
        entries are counted as they come and the count is a lower bound).
        """
        result = self.result
        limits = self.context.limits
        if listed is not None:
            result.entries = listed
        for index, entry in enumerate(entries):
            if listed is not None and index >= limits.max_members:
                result.truncated = truncation(listed - index, listed, limits)
                return
            if listed is None:
                result.entries += 1
                if result.entries > limits.max_members:
                    result.entries_exact = False
                    result.truncated = (
                        f"more than max_members ({limits.max_members}) entries; the rest were "
                        "not processed"
                    )
                    return
            if entry.is_dir:
                continue
            name = entry.name
            path, reason = safe_member_path(name)
            if reason:
                result.skip(name, reason)
            elif entry.link:
                to = "" if entry.target is None else f" to {display(entry.target)!r}"
                result.skip(name, f"{entry.link}{to} not followed")
            elif entry.special:
                result.skip(name, f"{entry.special} not extracted")
            elif entry.size is not None and entry.size > limits.max_member_bytes:
                result.skip(name, oversize(entry.size, limits))
            elif entry.size == 0:
                result.skip(name, "empty")
            else:
                yield entry, path

    def run(self, entries: Iterable[Entry], read: ReadMember, *, listed: int | None) -> None:
        """Admit, read and record every entry, until the entries end or an archive-wide guard
        (or `stop`, as "cancelled") ends the walk: `result.truncated` says why.

        Raises whatever `entries` or `read` raise besides `WrongPassword`, `MemberFailed`,
        `SkipMember` and `StopArchive` (from `read`), with `current` naming the member read.
        """
        for entry, path in self.admitted(entries, listed=listed):
            if not self._extract(entry, path, read):
                return

    def _extract(self, entry: Entry, path: str, read: ReadMember) -> bool:
        """Read one admitted member into the result; False when the walk must stop."""
        result = self.result
        name = entry.name
        candidates: list[str | None] = (
            [*self.working, *(p for p in self.context.passwords if p not in self.working)]
            if entry.encrypted
            else [None]
        )
        self.current = name
        try:
            opened = self._first_that_opens(entry, candidates, read)
        except SkipMember as skipped:
            result.skip(name, skipped.reason)
            self.current = ""
            return True
        except StopArchive as stopped:
            result.skip(name, stopped.reason)
            result.truncated = stopped.reason
            return False
        except MemberFailed as failed:
            result.skip(name, failed.reason)
            if failed.malformed:
                result.bad(failed.malformed)
            result.backend_missing |= failed.backend_missing
            self.current = ""
            return True
        self.current = ""
        if opened is None:
            result.skip(name, "password-required")
            result.password_failures += 1
            return True
        content, password = opened
        if not content:
            result.skip(name, "empty")
            return True
        if password is not None and password not in self.working:
            self.working.insert(0, password)
        result.add(path, content, password)
        return True

    @staticmethod
    def _first_that_opens(
        entry: Entry, candidates: list[str | None], read: ReadMember
    ) -> tuple[bytes, str | None] | None:
        """`(data, password)` for the first candidate that opens the member; None if none."""
        for password in candidates:
            try:
                return read(entry, password), password
            except WrongPassword:
                continue
        return None
