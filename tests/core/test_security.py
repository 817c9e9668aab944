"""The label model (core.security): reading labels, Azul's access rules, combining, the caches.

The tables use the label model of the Go dispatcher's and azul-security's own tests (LOW < LOW: LY
< MEDIUM < HIGH < TOP HIGH, caveats MOD1…, releasability REL:APPLE/BEE/CAR with origin APPLE,
releasability from MEDIUM up, TLP:AMBER+STRICT enforced), with the cases those tests decide, so a
reader can hold azuld's answers against Azul's.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azuld.core.security import (
    AccessDecisions,
    BoundedCache,
    Clearance,
    Label,
    LabelModel,
    event_label,
)
from azuld.errors import ConfigError, UnreadableLabel
from azuld.models.events import Author, StatusEntity, StatusEvent
from tests.conftest import NOW, make_binary

PLAIN = settings(max_examples=200, database=None, deadline=None)

AZUL = LabelModel(
    classifications=["LOW", "LOW: LY", "MEDIUM", "HIGH", "TOP HIGH"],
    caveats=["MOD1", "MOD2", "MOD3", "HANOVERLAP", "OVER"],
    releasability=["REL:APPLE", "REL:BEE", "REL:CAR"],
    releasability_origin="REL:APPLE",
    releasable_from="MEDIUM",
    markings=["TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT"],
    enforced_markings=["TLP:AMBER+STRICT"],
)
# No origin and no releasable_from: releasability on any classification, in any combination.
OPEN = LabelModel(
    classifications=["OFFICIAL", "OFFICIAL:SENSITIVE", "PROTECTED", "SECRET", "TOP SECRET"],
    caveats=["AUSTEO", "AGAO"],
    releasability=["REL:AUS", "REL:GBR", "REL:USA"],
    markings=["TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED"],
    enforced_markings=["TLP:AMBER+STRICT", "TLP:RED"],
)


def sees(model: LabelModel, clearance: str, label: str) -> bool:
    return model.can_access(model.parse_clearance(clearance), model.parse(label))


# -- access: the Go dispatcher's FilterSecurity cases and azul-security's check_access cases ---

ACCESS: list[tuple[str, str, bool]] = [
    # (clearance, label, may see)
    ("MEDIUM MOD1 REL:APPLE", "LOW", True),
    ("MEDIUM MOD1 REL:APPLE", "LOW MOD1", True),
    ("MEDIUM MOD1 REL:APPLE", "MEDIUM MOD1", True),
    ("MEDIUM MOD1 REL:APPLE", "MEDIUM", True),
    ("MEDIUM MOD1 REL:APPLE", "MEDIUM REL:APPLE", True),
    ("MEDIUM MOD1 REL:APPLE", "MEDIUM REL:APPLE,BEE", True),
    ("MEDIUM", "HIGH", False),  # classification above
    ("MEDIUM", "TOP HIGH", False),
    ("MEDIUM", "HIGH MOD1", False),
    ("MEDIUM", "HIGH REL:APPLE", False),
    ("MEDIUM", "LOW MOD1", False),  # a caveat not held, however low the classification
    ("MEDIUM", "LOW MOD2", False),
    ("MEDIUM", "MEDIUM MOD3", False),
    ("MEDIUM", "LOW: LY", True),  # a multi-word classification below
    ("MEDIUM", "MEDIUM REL:APPLE", False),  # releasability not shared (none held)
    ("MEDIUM REL:APPLE,BEE", "MEDIUM REL:APPLE REL:BEE", True),
    ("MEDIUM REL:APPLE,BEE", "REL:APPLE,BEE,CAR MEDIUM", True),
    ("MEDIUM REL:APPLE,BEE", "REL:APPLE MEDIUM", True),
    ("MEDIUM REL:BEE", "MEDIUM REL:APPLE,BEE", True),  # one group in common is enough
    ("MEDIUM REL:BEE", "MEDIUM REL:APPLE,CAR", False),
    ("MEDIUM REL:APPLE,BEE", "REL:APPLE REL:BEE REL:CAR HIGH", False),
    ("MEDIUM MOD1 MOD2", "MEDIUM MOD1 MOD2", True),
    ("MEDIUM MOD1", "MEDIUM MOD1 MOD2", False),  # caveats: all of them
    ("MEDIUM REL:APPLE,BEE", "LOW TLP:CLEAR", True),  # markings inform, unless enforced
    ("MEDIUM REL:APPLE,BEE", "LOW TLP:GREEN", True),
    ("MEDIUM REL:APPLE,BEE", "LOW TLP:AMBER+STRICT", False),
    ("LOW TLP:AMBER+STRICT", "LOW TLP:AMBER+STRICT", True),
    ("TOP HIGH MOD1 MOD2 MOD3 HANOVERLAP OVER REL:APPLE,BEE,CAR", "HIGH OVER REL:CAR,APPLE", True),
]


@pytest.mark.parametrize(("clearance", "label", "expected"), ACCESS)
def test_access_follows_azul(clearance: str, label: str, expected: bool) -> None:
    assert sees(AZUL, clearance, label) is expected


OPEN_ACCESS: list[tuple[str, str, bool]] = [
    ("OFFICIAL", "OFFICIAL", True),
    ("OFFICIAL", "official", True),  # case does not matter
    ("OFFICIAL", "OFFICIAL:SENSITIVE", False),
    ("OFFICIAL:SENSITIVE", "OFFICIAL", True),
    ("SECRET", "TOP SECRET", False),  # `SECRET` is not read inside `TOP SECRET`
    ("TOP SECRET", "SECRET AUSTEO", False),
    ("TOP SECRET AUSTEO", "SECRET AUSTEO", True),
    ("PROTECTED REL:GBR", "PROTECTED REL:AUS,GBR", True),
    ("PROTECTED REL:USA", "PROTECTED REL:AUS,GBR", False),
    ("PROTECTED", "PROTECTED REL:AUS", False),
    ("SECRET TLP:RED", "OFFICIAL TLP:RED", True),
    ("SECRET TLP:AMBER+STRICT", "OFFICIAL TLP:RED", False),  # the enforced marking itself
    ("SECRET", "OFFICIAL TLP:AMBER", True),
]


@pytest.mark.parametrize(("clearance", "label", "expected"), OPEN_ACCESS)
def test_access_in_an_open_model(clearance: str, label: str, expected: bool) -> None:
    assert sees(OPEN, clearance, label) is expected


# -- reading -----------------------------------------------------------------------------------

NORMAL: list[tuple[str, str]] = [
    # (written, canonical): azul-security's normalisation cases
    ("HIGH REL:APPLE", "HIGH REL:APPLE"),
    ("HIGH REL:APPLE REL:BEE REL:CAR", "HIGH REL:APPLE,BEE,CAR"),
    ("high REL:APPLE MOD2 MOD3 REL:BEE REL:CAR", "HIGH MOD2 MOD3 REL:APPLE,BEE,CAR"),
    ("high///REL:APPLE", "HIGH REL:APPLE"),
    ("HIGH///REL:APPLE\\REL:BEE", "HIGH REL:APPLE,BEE"),
    ("high MEDIUM MOD3 MOD1 MOD2 REL:APPLE,BEE REL:CAR", "HIGH MOD1 MOD2 MOD3 REL:APPLE,BEE,CAR"),
    ("LOW: LY MOD1", "LOW: LY MOD1"),
    ("low:  ly", "LOW: LY"),
    ("LOW TLP:CLEAR TLP:AMBER", "LOW TLP:AMBER"),  # the most restrictive marking stays
    ("MEDIUM TLP:AMBER", "MEDIUM"),  # no markings where releasability is allowed
    ("MEDIUM REL:", "MEDIUM"),  # an empty group list
]


@pytest.mark.parametrize(("written", "canonical"), NORMAL)
def test_labels_read_as_azul_writes_them(written: str, canonical: str) -> None:
    assert AZUL.render(AZUL.parse(written)) == canonical


UNREADABLE: list[tuple[str, str]] = [
    # (label, part of the message)
    ("MODERATOR", "unknown marking 'MODERATOR'"),
    ("HIGHREL:APPLE", "unknown marking 'HIGHREL:APPLE'"),
    ("HIGHTLP:GREEN", "unknown marking 'HIGHTLP:GREEN'"),
    ("INVALIDognregtro", "unknown marking"),
    ("Random", "unknown marking 'RANDOM'"),
    ("", "no classification (one of LOW, LOW: LY, MEDIUM, HIGH, TOP HIGH)"),
    ("MOD1 REL:APPLE", "no classification"),
    ("HIGH REL:APPLE,DOG", "unknown releasability group 'REL:DOG'"),
    ("MEDIUM REL:CAR", "must include the origin REL:APPLE"),
    ("LOW REL:APPLE", "releasability is only allowed from MEDIUM up"),
    ("LOW: LY HIGH MOD9", "unknown marking 'MOD9'"),
]


@pytest.mark.parametrize(("label", "message"), UNREADABLE)
def test_unreadable_labels_say_why(label: str, message: str) -> None:
    with pytest.raises(UnreadableLabel, match="security label") as caught:
        AZUL.parse(label)
    assert message in str(caught.value)
    assert caught.value.http_status == 422  # as max-security: the caller's mistake


def test_a_clearance_lists_what_it_holds() -> None:
    # Not held to the label rules: no origin needed, markings kept on any classification.
    held = AZUL.parse_clearance("MEDIUM REL:BEE TLP:AMBER+STRICT TLP:GREEN")
    assert held == Clearance(
        2, frozenset(), frozenset({"REL:BEE"}), frozenset({"TLP:AMBER+STRICT", "TLP:GREEN"})
    )
    with pytest.raises(UnreadableLabel, match=r"max-security 'Random': unknown marking"):
        AZUL.parse_clearance("Random")
    with pytest.raises(UnreadableLabel, match="max-security 'REL:APPLE': no classification"):
        AZUL.parse_clearance("REL:APPLE")


# -- combining: azul-security's string_combine cases ---------------------------------------

COMBINED: list[tuple[list[str], str]] = [
    (["LOW"], "LOW"),
    (["LOW", "MEDIUM"], "MEDIUM"),
    (["LOW", "MEDIUM", "HIGH"], "HIGH"),
    (["MEDIUM REL:APPLE", "MEDIUM"], "MEDIUM REL:APPLE"),
    (["MEDIUM REL:APPLE", "MEDIUM REL:APPLE,BEE,CAR"], "MEDIUM REL:APPLE"),
    (["MEDIUM REL:APPLE,BEE REL:CAR"], "MEDIUM REL:APPLE,BEE,CAR"),
    (["MEDIUM REL:APPLE,CAR", "MEDIUM REL:APPLE,BEE"], "MEDIUM REL:APPLE"),
    (["LOW TLP:GREEN", "MEDIUM REL:APPLE"], "MEDIUM REL:APPLE"),
    (
        ["LOW TLP:AMBER", "LOW TLP:CLEAR", "LOW TLP:GREEN", "LOW TLP:AMBER+STRICT"],
        "LOW TLP:AMBER+STRICT",
    ),
    (["HIGH", "MEDIUM", "LOW: LY", "MEDIUM MOD1"], "HIGH MOD1"),
]


@pytest.mark.parametrize(("labels", "combined"), COMBINED)
def test_combining_labels(labels: list[str], combined: str) -> None:
    assert AZUL.render(AZUL.combine(AZUL.parse(label) for label in labels)) == combined


def test_labels_releasable_to_no_one_in_common_cannot_be_combined() -> None:
    with pytest.raises(UnreadableLabel, match="no releasability group in common"):
        OPEN.combine([OPEN.parse("SECRET REL:AUS"), OPEN.parse("SECRET REL:GBR")])
    with pytest.raises(UnreadableLabel, match="no security label"):
        OPEN.combine([])


# -- the model's own configuration -------------------------------------------------------------

BAD_MODELS: list[tuple[dict[str, object], str]] = [
    ({"classifications": []}, "security.classifications: at least one"),
    ({"classifications": ["A", " "]}, "security.classifications: empty name"),
    ({"classifications": ["A", "a"]}, "security.classifications: 'A' is already defined"),
    ({"caveats": ["LOW"]}, "security.caveats: 'LOW' is already defined in security.classif"),
    ({"markings": ["A/B"]}, "security.markings: 'A/B' contains /"),
    ({"caveats": ["REL:X"]}, "security.caveats: 'REL:X' starts with the releasability prefix"),
    ({"releasability": ["APPLE"]}, "security.releasability: 'APPLE' must be 'REL:'"),
    ({"releasability": ["REL:"]}, "security.releasability: 'REL:' must be"),
    ({"releasability": ["REL:A,B"]}, "security.releasability: 'REL:A,B' must be one word"),
    ({"releasability_prefix": "R L"}, "security.releasability_prefix: 'R L' must be one word"),
    ({"releasability_origin": "REL:DOG"}, "security.releasability_origin: 'REL:DOG' is not"),
    ({"releasable_from": "MIDDLING"}, "security.releasable_from: 'MIDDLING' is not"),
    ({"enforced_markings": ["TLP:RED"]}, "security.enforced_markings: 'TLP:RED' not in"),
]


@pytest.mark.parametrize(("change", "message"), BAD_MODELS)
def test_a_bad_model_names_the_setting(change: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "classifications": ["LOW", "HIGH"],
        "releasability": ["REL:A"],
        "markings": ["TLP:CLEAR"],
    }
    with pytest.raises(ConfigError) as caught:
        LabelModel(**{**base, **change})  # type: ignore[arg-type]
    assert message in str(caught.value)


# -- an event's label ----------------------------------------------------------------------


def test_an_events_label_is_every_security_string_on_it() -> None:
    event = make_binary(depth=3)
    assert event_label(event) == ()
    assert event_label(event, default="OFFICIAL") == ("OFFICIAL",)
    event.source.security = "OFFICIAL"
    event.source.path[0].author.security = "OFFICIAL"
    assert event_label(event) == ("OFFICIAL",)
    event.source.path[2].author.security = "PROTECTED AUSTEO"
    event.author.security = "official"
    assert event_label(event) == ("OFFICIAL", "PROTECTED AUSTEO", "official")

    status = StatusEvent(
        timestamp=NOW,
        author=Author(name="Plugin", security="SECRET"),
        entity=StatusEntity(input=event, status="completed"),
    )
    assert event_label(status) == ("OFFICIAL", "PROTECTED AUSTEO", "SECRET", "official")


def test_an_event_is_decided_on_its_combined_label() -> None:
    decisions = AccessDecisions(OPEN)
    assert decisions.decide("PROTECTED AUSTEO", ("OFFICIAL", "PROTECTED AUSTEO")) is True
    assert decisions.decide("PROTECTED", ("OFFICIAL", "PROTECTED AUSTEO")) is False
    # Each part alone is visible, their combination (releasable to no one) is not.
    assert decisions.decide("SECRET REL:AUS,GBR", ("SECRET REL:AUS",)) is True
    assert decisions.decide("SECRET REL:AUS,GBR", ("SECRET REL:AUS", "SECRET REL:GBR")) is False


# -- caches --------------------------------------------------------------------------------


def test_decisions_fail_closed_and_are_cached_within_a_bound() -> None:
    decisions = AccessDecisions(OPEN, max_entries=3)
    assert decisions.decide("", ("TOP SECRET",)) is True  # no max-security: no check
    assert decisions.decide("OFFICIAL", ()) is True  # unlabelled: no check (as in Go)
    assert decisions.decide("Random", ("OFFICIAL",)) is False  # unreadable clearance
    assert decisions.decide("SECRET", ("OFFICIAL", "Random")) is False  # unreadable part
    assert len(decisions) == 2
    for label in ["OFFICIAL", "PROTECTED", "SECRET", "TOP SECRET"]:
        decisions.decide("SECRET", (label,))
    assert len(decisions) == 3


def test_bounded_cache_drops_the_least_recently_used() -> None:
    cache: BoundedCache[str, bool] = BoundedCache(2)
    cache.put("a", True)
    cache.put("b", False)
    assert cache.get("a") is True  # now "b" is the oldest
    cache.put("c", True)
    assert "b" not in cache
    assert cache.get("b") is None
    assert cache.get("a") is True
    assert cache.get("c") is True
    assert len(cache) == 2
    cache.pop("a")
    assert "a" not in cache
    with pytest.raises(ValueError, match="at least 1"):
        BoundedCache[str, bool](0)


# -- properties ----------------------------------------------------------------------------

MODELS = st.sampled_from([AZUL, OPEN])


@st.composite
def labels(draw: st.DrawFn, model: LabelModel) -> Label:
    """Any label the model can read (origin and `releasable_from` rules kept)."""
    rank = draw(st.integers(0, len(model.classifications) - 1))
    caveats = draw(st.frozensets(st.sampled_from(model.caveats))) if model.caveats else frozenset()
    allows_releasability = model.releasable_from is None or rank >= model.releasable_from
    groups: frozenset[str] = frozenset()
    if allows_releasability and model.releasability and draw(st.booleans()):
        groups = draw(st.frozensets(st.sampled_from(model.releasability), min_size=1))
        if model.origin:
            groups |= {model.origin}
    markings: frozenset[str] = frozenset()
    allows_markings = model.releasable_from is None or rank < model.releasable_from
    if allows_markings and draw(st.booleans()):
        markings = frozenset({draw(st.sampled_from(model.markings))})
    return Label(rank, caveats, groups, markings)


@st.composite
def clearances(draw: st.DrawFn, model: LabelModel) -> Clearance:
    return Clearance(
        draw(st.integers(0, len(model.classifications) - 1)),
        draw(st.frozensets(st.sampled_from(model.caveats))),
        draw(st.frozensets(st.sampled_from(model.releasability))),
        draw(st.frozensets(st.sampled_from(model.markings))),
    )


@st.composite
def below(draw: st.DrawFn, model: LabelModel, label: Label) -> Label:
    """A label no more restrictive than `label` (lower classification, fewer caveats, more
    releasability groups or none, no enforced marking it lacks)."""
    rank = draw(st.integers(0, label.classification))
    caveats = frozenset(c for c in label.caveats if draw(st.booleans()))
    if label.releasability:
        extra = draw(st.frozensets(st.sampled_from(model.releasability)))
        groups = frozenset() if draw(st.booleans()) else label.releasability | extra
    else:
        groups = frozenset()
    markings = label.markings if draw(st.booleans()) else frozenset()
    return Label(rank, caveats, groups, markings)


@st.composite
def model_and(draw: st.DrawFn, *, count: int = 1) -> tuple[LabelModel, list[Label], Clearance]:
    model = draw(MODELS)
    return model, [draw(labels(model)) for _ in range(count)], draw(clearances(model))


@PLAIN
@given(st.data())
def test_access_is_monotone_in_the_label(data: st.DataObject) -> None:
    """A clearance that may see a label may see everything below it."""
    model, (label,), held = data.draw(model_and())
    lower = data.draw(below(model, label))
    if model.can_access(held, label):
        assert model.can_access(held, lower)


@PLAIN
@given(st.data())
def test_access_is_monotone_in_the_clearance(data: st.DataObject) -> None:
    """A clearance that holds more sees at least as much."""
    model, (label,), held = data.draw(model_and())
    more = Clearance(
        data.draw(st.integers(held.classification, len(model.classifications) - 1)),
        held.caveats | data.draw(st.frozensets(st.sampled_from(model.caveats))),
        held.releasability | data.draw(st.frozensets(st.sampled_from(model.releasability))),
        held.markings | data.draw(st.frozensets(st.sampled_from(model.markings))),
    )
    if model.can_access(held, label):
        assert model.can_access(more, label)


@PLAIN
@given(st.data())
def test_a_label_reads_back_however_it_is_written(data: st.DataObject) -> None:
    """Its parts in any order, in any case, between any separators, releasability merged or
    not: the same label. And a clearance written like the label may see it."""
    model, (label,), _ = data.draw(model_and())
    groups = sorted(group[len(model.prefix) :] for group in label.releasability)
    merged = [model.prefix + ",".join(groups)] if groups else []
    separate = [model.prefix + group for group in groups]
    items = [
        model.classifications[label.classification],
        *label.caveats,
        *label.markings,
        *(merged if data.draw(st.booleans()) else separate),
    ]
    written = ""
    for index, item in enumerate(data.draw(st.permutations(items))):
        if index:
            written += data.draw(st.sampled_from([" ", "  ", "/", "//", "\\", " / "]))
        written += item.lower() if data.draw(st.booleans()) else item
    assert model.parse(written) == label
    text = model.render(label)
    assert model.parse(text) == label
    assert model.can_access(model.parse_clearance(text), label)


@PLAIN
@given(st.data())
def test_a_combined_label_is_no_less_restrictive_than_its_parts(data: st.DataObject) -> None:
    model, (first, second), held = data.draw(model_and(count=2))
    try:
        combined = model.combine([first, second])
    except UnreadableLabel:
        assert first.releasability
        assert second.releasability
        assert first.releasability.isdisjoint(second.releasability)
        return
    assert combined == model.combine([second, first])
    assert model.combine([first, first]) == first
    # Deciding on the combination alone could let an enforced marking of a part go (one marking
    # is kept, and `releasable_from` drops them): the decision checks every part as well.
    decisions = AccessDecisions(model)
    texts = tuple(sorted({model.render(first), model.render(second)}))
    if decisions.decide(model.render(held), texts):
        assert model.can_access(held, combined)
        assert model.can_access(held, first)
        assert model.can_access(held, second)


def test_an_enforced_marking_is_not_lost_in_a_combination() -> None:
    """TLP:AMBER+STRICT on a LOW part of an event whose other part is HIGH: from MEDIUM up
    markings are dropped (releasability is allowed there), so the combination is plain HIGH; a
    HIGH clearance without the marking still may not see the event."""
    decisions = AccessDecisions(AZUL)
    label = ("HIGH", "LOW TLP:AMBER+STRICT")
    assert AZUL.render(AZUL.combine(AZUL.parse(p) for p in label)) == "HIGH"
    assert decisions.decide("HIGH", label) is False
    assert decisions.decide("HIGH TLP:AMBER+STRICT", label) is True


@PLAIN
@given(st.data())
def test_cached_decisions_match_the_model(data: st.DataObject) -> None:
    model, found, held = data.draw(model_and(count=3))
    decisions = AccessDecisions(model, max_entries=2)
    clearance = model.render(held)
    for label in found:
        key = (model.render(label),)
        expected = model.can_access(model.parse_clearance(clearance), label)
        assert decisions.decide(clearance, key) is expected
        assert decisions.decide(clearance, key) is expected  # from the cache
        assert len(decisions) <= 2
