"""Security labels and `max-security` clearances, as Azul reads and compares them.

Theory of operation
-------------------
Azul marks every event with security strings: `source.security`, the event's `author.security`
and each `source.path[*].author.security`, e.g. `OFFICIAL`, `OFFICIAL:SENSITIVE TLP:AMBER` or
`SECRET CAVEAT1 REL:AUS,GBR`. A deployment defines four groups of markings (azul-security's
`security_labels`; here the `[security]` settings):

- **classifications**, ordered from least to most restrictive. A label has exactly one (several
  collapse to the most restrictive); a clearance sees its own classification and every one below.
- **caveats** (Azul's "required" groups): the clearance must hold *all* of the label's caveats.
- **releasability** groups, written `REL:A,B` or `REL:A REL:B` (the prefix is configurable): the
  label is releasable to any of them, so the clearance must share *at least one*. A label without
  releasability is not restricted by it. When the deployment names an origin group, a label with
  releasability must include it (Azul refuses the label otherwise).
- **markings** (TLP): descriptive, except the *enforced* ones (Azul's `enforce_security`, e.g.
  `TLP:AMBER+STRICT`), which the clearance must hold. A label keeps only its most restrictive one.

Where the deployment sets `releasable_from` (Azul's `allow_releasability_priority_gte`),
releasability is allowed only from that classification up, and markings only below it: a label
with releasability below it is unreadable, and markings at or above it are dropped, as Azul does.

Reading a string: it is upper-cased, `/` and `\\` count as spaces, and its words are matched
against the configured names (longest first: `TOP SECRET` before `SECRET`), words starting with
the releasability prefix are split on commas. Any word left over, or no classification, makes the
label unreadable (`UnreadableLabel`): never a guess. A clearance (`max-security`) is read the same
way, but is not held to the origin and `releasable_from` rules (it lists what is held, like Azul's
user labels) and keeps every marking it names.

An event's label is every distinct non-empty security string on it (`event_label`), combined as
Azul's metastore does (`azul_security.string_combine`): the most restrictive classification, every
caveat, the releasability groups common to all parts (none in common: nobody may see it), the
most restrictive marking. The Go dispatcher checks `source.security` alone; azuld checks all of
them, so a plugin's own restricted results are not handed to a plugin below them. A clearance must
see the combination *and* each part: combining keeps one marking and `releasable_from` drops
markings, so the combination alone could lose an enforced marking of a part (fail closed).

Decisions are cached per (clearance, label) pair in a bounded cache (`AccessDecisions`): a
deployment has few distinct pairs, and the cache bound keeps odd labels from growing memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from azuld.errors import ConfigError, UnreadableLabel
from azuld.models.events import BinaryEvent, StatusEvent

__all__ = [
    "SECURITY_FILTER",
    "AccessDecisions",
    "BoundedCache",
    "Clearance",
    "EventLabel",
    "Label",
    "LabelModel",
    "event_label",
]

# The skip reason of an event above the clearance (or undecidable), in Go's "<Pipeline>-<state>".
SECURITY_FILTER = "FilterSecurity-max_security"

# An event's security strings: distinct, non-empty, sorted. `()` is an unlabelled event.
EventLabel = tuple[str, ...]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A dict of at most `max_entries`, dropping the least recently used entry when full."""

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(frozen=True, slots=True)
class Label:
    """A readable label: `classification` is an index into the model's classifications."""

    classification: int
    caveats: frozenset[str] = frozenset()
    releasability: frozenset[str] = frozenset()
    markings: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Clearance:
    """What a `max-security` holds: every classification up to `classification`, its caveats,
    releasability groups and markings."""

    classification: int
    caveats: frozenset[str] = frozenset()
    releasability: frozenset[str] = frozenset()
    markings: frozenset[str] = frozenset()


def _name(raw: str) -> str:
    return " ".join(raw.upper().split())


def _words(text: str) -> list[str]:
    return text.upper().replace("/", " ").replace("\\", " ").split()


class LabelModel:
    """One deployment's markings (see the module notes). Immutable; parsing is pure."""

    def __init__(
        self,
        *,
        classifications: Sequence[str],
        caveats: Sequence[str] = (),
        releasability: Sequence[str] = (),
        releasability_prefix: str = "REL:",
        releasability_origin: str = "",
        releasable_from: str = "",
        markings: Sequence[str] = (),
        enforced_markings: Sequence[str] = (),
    ) -> None:
        """Raises:
        ConfigError: a name is empty, defined twice, has a character no label can carry, or a
            reference (origin, `releasable_from`, an enforced marking) names nothing defined.
        """
        prefix = releasability_prefix.upper()
        if not prefix or prefix != prefix.strip() or " " in prefix:
            raise ConfigError(
                f"security.releasability_prefix: {releasability_prefix!r} must be one word"
            )
        self.prefix = prefix
        self.classifications = self._names("classifications", classifications)
        if not self.classifications:
            raise ConfigError("security.classifications: at least one classification is needed")
        self.caveats = self._names("caveats", caveats)
        self.markings = self._names("markings", markings)
        self.releasability = tuple(_name(r) for r in releasability)
        for group in self.releasability:
            if not group.startswith(prefix) or len(group) == len(prefix):
                raise ConfigError(
                    f"security.releasability: {group!r} must be {prefix!r} and a group name"
                )
            if " " in group or "," in group or "/" in group or "\\" in group:
                raise ConfigError(
                    f"security.releasability: {group!r} must be one word without commas"
                )
        seen: dict[str, str] = {}
        for key, names in (
            ("classifications", self.classifications),
            ("caveats", self.caveats),
            ("releasability", self.releasability),
            ("markings", self.markings),
        ):
            for name in names:
                if name in seen:
                    raise ConfigError(
                        f"security.{key}: {name!r} is already defined in security.{seen[name]}"
                    )
                seen[name] = key
        self._rank = {name: index for index, name in enumerate(self.classifications)}
        self._marking_rank = {name: index for index, name in enumerate(self.markings)}
        self._groups = frozenset(self.releasability)
        self.origin = _name(releasability_origin)
        if self.origin and self.origin not in self._groups:
            raise ConfigError(
                f"security.releasability_origin: {self.origin!r} is not in security.releasability"
            )
        self.releasable_from: int | None = None
        if releasable_from:
            rank = self._rank.get(_name(releasable_from))
            if rank is None:
                raise ConfigError(
                    f"security.releasable_from: {releasable_from!r} is not in "
                    "security.classifications"
                )
            self.releasable_from = rank
        self.enforced = frozenset(_name(m) for m in enforced_markings)
        if not self.enforced <= set(self.markings):
            unknown = sorted(self.enforced - set(self.markings))
            raise ConfigError(
                f"security.enforced_markings: {', '.join(map(repr, unknown))} not in "
                "security.markings"
            )
        # Word sequences of every classification, caveat and marking, tried longest first.
        self._phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        for group, names in (
            ("classification", self.classifications),
            ("caveat", self.caveats),
            ("marking", self.markings),
        ):
            for name in names:
                self._phrases[tuple(name.split())] = (group, name)
        self._longest = max(len(words) for words in self._phrases)

    def _names(self, key: str, raw: Sequence[str]) -> tuple[str, ...]:
        names = tuple(_name(n) for n in raw)
        for original, name in zip(raw, names, strict=True):
            if not name:
                raise ConfigError(f"security.{key}: empty name")
            if "/" in name or "\\" in name:
                raise ConfigError(
                    f"security.{key}: {original!r} contains / or \\, which labels use as spaces"
                )
            if name.startswith(self.prefix):
                raise ConfigError(
                    f"security.{key}: {original!r} starts with the releasability prefix "
                    f"{self.prefix!r}"
                )
        return names

    # -- reading -----------------------------------------------------------------------------

    def _read(
        self, text: str, what: str
    ) -> tuple[int, frozenset[str], frozenset[str], frozenset[str]]:
        words = _words(text)
        ranks: list[int] = []
        caveats: set[str] = set()
        groups: set[str] = set()
        markings: set[str] = set()
        at = 0
        while at < len(words):
            for size in range(min(self._longest, len(words) - at), 0, -1):
                found = self._phrases.get(tuple(words[at : at + size]))
                if found is not None:
                    group, name = found
                    if group == "classification":
                        ranks.append(self._rank[name])
                    elif group == "caveat":
                        caveats.add(name)
                    else:
                        markings.add(name)
                    at += size
                    break
            else:
                word = words[at]
                if not word.startswith(self.prefix):
                    raise UnreadableLabel(f"{what} {text!r}: unknown marking {word!r}")
                for part in word[len(self.prefix) :].split(","):
                    if not part:
                        continue
                    group = self.prefix + part
                    if group not in self._groups:
                        raise UnreadableLabel(
                            f"{what} {text!r}: unknown releasability group {group!r}"
                        )
                    groups.add(group)
                at += 1
        if not ranks:
            raise UnreadableLabel(
                f"{what} {text!r}: no classification (one of {', '.join(self.classifications)})"
            )
        return max(ranks), frozenset(caveats), frozenset(groups), frozenset(markings)

    def _normalise(self, label: Label, text: str) -> Label:
        """Azul's rules for a label: origin, `releasable_from`, one marking."""
        markings = label.markings
        if self.releasable_from is not None:
            allows_releasability = label.classification >= self.releasable_from
            if allows_releasability:
                markings = frozenset()  # Azul drops markings where releasability is allowed
            elif label.releasability:
                raise UnreadableLabel(
                    f"security label {text!r}: releasability is only allowed from "
                    f"{self.classifications[self.releasable_from]} up"
                )
        if label.releasability and self.origin and self.origin not in label.releasability:
            raise UnreadableLabel(
                f"security label {text!r}: releasability must include the origin {self.origin}"
            )
        if len(markings) > 1:
            markings = frozenset({max(markings, key=self._marking_rank.__getitem__)})
        if markings is label.markings:
            return label
        return Label(label.classification, label.caveats, label.releasability, markings)

    def parse(self, text: str) -> Label:
        """Read one security string.

        Raises:
            UnreadableLabel: an unknown word, no classification, or a rule of the module notes.
        """
        rank, caveats, groups, markings = self._read(text, "security label")
        return self._normalise(Label(rank, caveats, groups, markings), text)

    def parse_clearance(self, text: str) -> Clearance:
        """Read a `max-security` clearance (not held to the origin or `releasable_from` rules).

        Raises:
            UnreadableLabel: an unknown word or no classification.
        """
        return Clearance(*self._read(text, "max-security"))

    def combine(self, labels: Iterable[Label]) -> Label:
        """The label of something carrying all of `labels` (Azul's `string_combine`).

        Raises:
            UnreadableLabel: their releasability groups have none in common, or `labels` is
                empty.
        """
        labels = list(labels)
        if not labels:
            raise UnreadableLabel("no security label to combine")
        if len(labels) == 1:
            return labels[0]
        restricted = [label.releasability for label in labels if label.releasability]
        groups = frozenset.intersection(*restricted) if restricted else frozenset()
        if restricted and not groups:
            raise UnreadableLabel(
                "security labels "
                f"{' and '.join(self.render(label) for label in labels)} have no releasability "
                "group in common: nobody may see their combination"
            )
        combined = Label(
            max(label.classification for label in labels),
            frozenset().union(*(label.caveats for label in labels)),
            groups,
            frozenset().union(*(label.markings for label in labels)),
        )
        return self._normalise(combined, self.render(combined))

    def render(self, label: Label | Clearance) -> str:
        """The canonical string: classification, caveats, `REL:A,B`, markings (config order)."""
        parts = [self.classifications[label.classification]]
        parts += [name for name in self.caveats if name in label.caveats]
        if label.releasability:
            names = sorted(group[len(self.prefix) :] for group in label.releasability)
            parts.append(self.prefix + ",".join(names))
        parts += [name for name in self.markings if name in label.markings]
        return " ".join(parts)

    # -- deciding ----------------------------------------------------------------------------

    def can_access(self, clearance: Clearance, label: Label) -> bool:
        """Whether `clearance` may see `label`: the label's classification is at or below the
        clearance's, the clearance holds every caveat of the label, shares at least one of its
        releasability groups (if it has any) and holds its enforced marking (if any)."""
        if label.classification > clearance.classification:
            return False
        if not label.caveats <= clearance.caveats:
            return False
        if label.releasability and label.releasability.isdisjoint(clearance.releasability):
            return False
        enforced = label.markings & self.enforced
        return not (enforced and enforced.isdisjoint(clearance.markings))


class AccessDecisions:
    """A `LabelModel`'s decisions per (clearance, event label) string pair, cached (bounded).

    An unreadable clearance or label, or parts that cannot be combined, decide `False`.
    """

    def __init__(self, model: LabelModel, *, max_entries: int = 4096) -> None:
        self.model = model
        self.max_entries = max_entries
        self._decisions: BoundedCache[tuple[str, EventLabel], bool] = BoundedCache(max_entries)

    def decide(self, clearance: str, label: EventLabel) -> bool:
        """May `clearance` see an event labelled `label`? An empty clearance (no `max-security`)
        or label (an unlabelled event) is not checked, as in Go."""
        if not clearance or not label:
            return True
        key = (clearance, label)
        decision = self._decisions.get(key)
        if decision is None:
            decision = self._decide(clearance, label)
            self._decisions.put(key, decision)
        return decision

    def _decide(self, clearance: str, label: EventLabel) -> bool:
        model = self.model
        try:
            held = model.parse_clearance(clearance)
            parts = [model.parse(part) for part in label]
            combined = model.combine(parts)
        except UnreadableLabel:
            return False
        # Each part too: the combination may have dropped a part's enforced marking.
        return model.can_access(held, combined) and all(
            model.can_access(held, part) for part in parts
        )

    def __len__(self) -> int:
        return len(self._decisions)


def _binary_securities(event: BinaryEvent) -> list[str]:
    found = [event.source.security, event.author.security]
    found += [node.author.security for node in event.source.path]
    return found


def event_label(event: BinaryEvent | StatusEvent, default: str = "") -> EventLabel:
    """The security strings an event carries: `source.security`, `author.security` and every
    `source.path[*].author.security` (a status event: its input's and its own author's).

    Distinct, non-empty and sorted, so that events marked alike share a cache entry; `(default,)`
    if there are none and a default is given, else `()` (unlabelled).
    """
    if isinstance(event, StatusEvent):
        found = _binary_securities(event.entity.input)
        found.append(event.author.security)
    else:
        found = _binary_securities(event)
    distinct = {security for security in found if security}
    if not distinct:
        return (default,) if default else ()
    if len(distinct) == 1:
        return (distinct.pop(),)
    return tuple(sorted(distinct))
