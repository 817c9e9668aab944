"""The file-type rules: `rules.toml`, loaded once, checked and compiled.

Loading refuses a file that would misbehave later: an unknown key, a byte string that is not
ASCII with Python escapes, a pattern that does not compile, or an id with no extension entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Final

import msgspec

__all__ = ["RULES", "OleRule", "Rules", "Signature", "TextRules", "load_rules"]


class _SignatureEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    prefixes: list[str] = msgspec.field(name="bytes")
    offset: int = 0
    id: str = ""
    check: str = ""
    undecided: str = ""


class _OleEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: str
    names: list[str] = []
    prefixes: list[str] = []


class _MagicEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    id: str
    magic: str


class _TextSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    html_start: str
    html_line: str
    html_end: str
    batch_echo_off: str
    ps_cmdlet_verbs: list[str]
    batch_lines: list[str]
    ps_strong: list[str]
    ps_weak: list[str]
    js_strong: list[str]
    js_weak: list[str]
    interpreters: dict[str, str]


class _RulesFile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: int
    signatures: list[_SignatureEntry]
    ole_streams: list[_OleEntry]
    rules: list[_MagicEntry]
    trusted_mimes: dict[str, str]
    text: _TextSection
    extensions: dict[str, str]


@dataclass(frozen=True, slots=True)
class Signature:
    """Magic bytes: any of `prefixes` at `offset` gives `id`, or what the named `check` finds.

    When the check finds nothing, an `undecided` id hands the blob to the libmagic rules (with
    that id as their default); without one the next signature is tried.
    """

    prefixes: tuple[bytes, ...]
    offset: int
    id: str
    check: str
    undecided: str


@dataclass(frozen=True, slots=True)
class OleRule:
    """An OLE2 container with a stream named one of `names`, or starting with one of
    `prefixes`, is an `id`."""

    id: str
    names: frozenset[str]
    prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TextRules:
    """The patterns the text step scores (see `[text]` in rules.toml)."""

    interpreters: dict[str, str]
    html_start: re.Pattern[str]
    html_line: re.Pattern[str]
    html_end: re.Pattern[str]
    batch_echo_off: re.Pattern[str]
    ps_cmdlet: re.Pattern[str]
    batch_lines: tuple[re.Pattern[str], ...]
    ps_strong: tuple[re.Pattern[str], ...]
    ps_weak: tuple[re.Pattern[str], ...]
    js_strong: tuple[re.Pattern[str], ...]
    js_weak: tuple[re.Pattern[str], ...]


@dataclass(frozen=True, slots=True)
class Rules:
    """Every table of rules.toml, ready to use."""

    version: int
    signatures: tuple[Signature, ...]
    ole_streams: tuple[OleRule, ...]
    magic: tuple[tuple[re.Pattern[str], str], ...]
    trusted_mimes: dict[str, str]
    text: TextRules
    extensions: dict[str, str]


def _escaped_bytes(text: str, where: str) -> bytes:
    """`'\\x89PNG'` -> b'\\x89PNG': ASCII with Python escapes, nothing else."""
    try:
        return text.encode("ascii").decode("unicode_escape").encode("latin-1")
    except UnicodeError as exc:
        raise ValueError(f"identify rules: {where}: {text!r} is not ASCII bytes: {exc}") from None


def _pattern(text: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise ValueError(f"identify rules: {where}: bad pattern {text!r}: {exc}") from None


def _patterns(texts: list[str], where: str) -> tuple[re.Pattern[str], ...]:
    return tuple(_pattern(text, f"{where}[{i}]") for i, text in enumerate(texts))


def _compile(raw: _RulesFile) -> Rules:
    signatures: list[Signature] = []
    for i, entry in enumerate(raw.signatures):
        where = f"signatures[{i}]"
        if not entry.prefixes or bool(entry.id) == bool(entry.check):
            raise ValueError(f"identify rules: {where}: needs bytes, and an id or a check")
        prefixes = tuple(_escaped_bytes(p, where) for p in entry.prefixes)
        signatures.append(Signature(prefixes, entry.offset, entry.id, entry.check, entry.undecided))
    text = raw.text
    verbs = "|".join(re.escape(verb) for verb in text.ps_cmdlet_verbs)
    rules = Rules(
        version=raw.version,
        signatures=tuple(signatures),
        ole_streams=tuple(
            OleRule(e.id, frozenset(e.names), tuple(e.prefixes)) for e in raw.ole_streams
        ),
        magic=tuple(
            (_pattern(e.magic, f"rules[{i}] ({e.id})"), e.id) for i, e in enumerate(raw.rules)
        ),
        trusted_mimes=dict(raw.trusted_mimes),
        text=TextRules(
            interpreters=dict(text.interpreters),
            html_start=_pattern(text.html_start, "text.html_start"),
            html_line=_pattern(text.html_line, "text.html_line"),
            html_end=_pattern(text.html_end, "text.html_end"),
            batch_echo_off=_pattern(text.batch_echo_off, "text.batch_echo_off"),
            ps_cmdlet=_pattern(rf"(?i)\b(?:{verbs})-[A-Z][A-Za-z]+\b", "text.ps_cmdlet_verbs"),
            batch_lines=_patterns(text.batch_lines, "text.batch_lines"),
            ps_strong=_patterns(text.ps_strong, "text.ps_strong"),
            ps_weak=_patterns(text.ps_weak, "text.ps_weak"),
            js_strong=_patterns(text.js_strong, "text.js_strong"),
            js_weak=_patterns(text.js_weak, "text.js_weak"),
        ),
        extensions=dict(raw.extensions),
    )
    ids = {
        *(s.id or s.undecided for s in rules.signatures),
        *(r.id for r in rules.ole_streams),
        *(fmt for _, fmt in rules.magic),
        *rules.trusted_mimes.values(),
        *rules.text.interpreters.values(),
    }
    missing = sorted(ids - {""} - rules.extensions.keys())
    if missing:
        raise ValueError(f"identify rules: ids without an [extensions] entry: {missing}")
    return rules


def load_rules(source: bytes | None = None) -> Rules:
    """Parse rules.toml (or `source`, the text of another such file); raises `ValueError`
    saying what is wrong and where."""
    if source is None:
        source = (files("azuld.identify") / "rules.toml").read_bytes()
    try:
        raw = msgspec.toml.decode(source, type=_RulesFile)
    except msgspec.MsgspecError as exc:  # bad TOML, or a key or type the file may not have
        raise ValueError(f"identify rules: {exc}") from None
    return _compile(raw)


RULES: Final = load_rules()
