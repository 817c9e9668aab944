"""The member walk every Unbox extractor shares, on hand-made entries: the guards in their
order, the password rotation and what each outcome records."""

from __future__ import annotations

import threading

from azuld.plugins.unbox.guards import Budget, SkipMember, StopArchive
from azuld.plugins.unbox.limits import Limits
from azuld.plugins.unbox.walk import (
    Context,
    Entry,
    Extraction,
    MemberFailed,
    MemberWalk,
    WrongPassword,
)


def walk(limits: Limits | None = None) -> MemberWalk:
    limits = limits or Limits(max_members=20, max_member_bytes=100)
    result = Extraction("test", {"action": "extracted", "container": "test"})
    return MemberWalk(result, Context(limits, Budget(limits, threading.Event()), "parent"))


def test_the_guards_apply_in_order_to_every_entry() -> None:
    entries = [
        Entry("dir/", is_dir=True),
        Entry("../up", link="symlink", size=10**9),  # the name is judged first
        Entry("a/link", link="hardlink", target="../../etc/passwd"),
        Entry("b/link", link="symlink"),
        Entry("fifo", special="fifo", size=0),
        Entry("big", size=101),
        Entry("empty", size=0),
        Entry("unknown-size", size=None),
        Entry("./ok\\file", size=100),
    ]
    w = walk()
    admitted = [(entry.name, path) for entry, path in w.admitted(entries, listed=len(entries))]
    assert admitted == [("unknown-size", "unknown-size"), ("./ok\\file", "ok/file")]
    assert w.result.skipped == [
        "../up: path traversal",
        "a/link: hardlink to '../../etc/passwd' not followed",
        "b/link: symlink not followed",
        "fifo: fifo not extracted",
        "big: header size 101 over max_member_bytes (100)",
        "empty: empty",
    ]
    assert (w.result.entries, w.result.entries_exact, w.result.truncated) == (9, True, "")


def test_a_listed_archive_is_truncated_at_max_members() -> None:
    w = walk(Limits(max_members=2))
    names = [e.name for e, _ in w.admitted([Entry(f"m{i}") for i in range(5)], listed=5)]
    assert names == ["m0", "m1"]
    assert w.result.entries == 5
    assert w.result.truncated == "3 of 5 entries not processed: over max_members (2)"


def test_a_stream_is_counted_as_it_comes() -> None:
    w = walk(Limits(max_members=2))
    names = [e.name for e, _ in w.admitted((Entry(f"m{i}") for i in range(5)), listed=None)]
    assert names == ["m0", "m1"]
    assert (w.result.entries, w.result.entries_exact) == (3, False)
    assert w.result.truncated.startswith("more than max_members (2) entries")


def test_passwords_rotate_and_outcomes_are_recorded() -> None:
    keys = {"a": "malware", "b": "malware", "c": "virus", "d": None}
    tried: list[tuple[str, str | None]] = []

    def read(entry: Entry, password: str | None) -> bytes:
        tried.append((entry.name, password))
        if entry.name == "skip":
            raise SkipMember("too big")
        if entry.name == "broken":
            raise MemberFailed("corrupt: x", malformed="data is corrupt", backend_missing=True)
        if entry.name == "nothing":
            return b""
        if entry.name == "stop":
            raise StopArchive("budget spent")
        if password != keys.get(entry.name, "never"):
            raise WrongPassword
        return entry.name.encode()

    w = walk()
    entries = [Entry(n, encrypted=n != "d") for n in ("a", "b", "c", "locked", "d")]
    entries += [Entry(n) for n in ("skip", "broken", "nothing", "stop", "never-read")]
    w.run(entries, read, listed=len(entries))
    result = w.result
    assert [(m.filename, m.data, m.relationship.get("password")) for m in result.members] == [
        ("a", b"a", "malware"),
        ("b", b"b", "malware"),
        ("c", b"c", "virus"),
        ("d", b"d", None),
    ]
    # The password that worked last is tried first on the next member.
    assert [p for n, p in tried if n == "b"] == ["malware"]
    assert [p for n, p in tried if n == "locked"] == ["virus", "malware", "infected", "password"]
    assert result.passwords == ["malware", "virus"]
    assert result.password_failures == 1
    assert result.skipped == [
        "locked: password-required",
        "skip: too big",
        "broken: corrupt: x",
        "nothing: empty",
        "stop: budget spent",
    ]
    assert (result.malformed, result.backend_missing) == (["data is corrupt"], True)
    assert result.truncated == "budget spent"
    assert all(name != "never-read" for name, _ in tried)
