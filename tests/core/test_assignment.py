"""Sharing partitions between instances: even per topic, sticky, deterministic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from azuld.core.assignment import Member, decode_claim, encode_claim, share_partitions
from azuld.core.cursor import TopicPartition


def tps(topic: str, *partitions: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in partitions]


def per_topic(share: list[TopicPartition], topic: str) -> int:
    return sum(1 for tp in share if tp.topic == topic)


def test_each_topic_is_spread_not_only_the_total() -> None:
    # Kafka's sticky assignor can give one instance both partitions of a source and the other
    # two system topics' partitions; dispatch needs the source spread.
    topics = frozenset({"source", "status", "plugin"})
    shares = share_partitions(
        {"source": 2, "status": 2, "plugin": 2}, {"a": Member(topics), "b": Member(topics)}
    )
    for topic in topics:
        assert per_topic(shares["a"], topic) == per_topic(shares["b"], topic) == 1


def test_partitions_stay_with_their_owner_when_the_spread_allows() -> None:
    topics = frozenset({"t"})
    before = {
        "a": Member(topics, frozenset(tps("t", 0, 2))),
        "b": Member(topics, frozenset(tps("t", 1, 3))),
    }
    assert share_partitions({"t": 4}, before) == {"a": tps("t", 0, 2), "b": tps("t", 1, 3)}
    # A third member takes one partition from one of them, nothing else moves.
    joined = {**before, "c": Member(topics)}
    shares = share_partitions({"t": 4}, joined)
    assert len(shares["c"]) == 1
    assert set(shares["a"]) | set(shares["b"]) | set(shares["c"]) == set(tps("t", 0, 1, 2, 3))
    assert set(shares["a"]) <= set(tps("t", 0, 2))
    assert set(shares["b"]) <= set(tps("t", 1, 3))


def test_the_newer_claim_wins_a_conflict() -> None:
    topics = frozenset({"t"})
    stale = Member(topics, frozenset(tps("t", 0)), generation=3)
    fresh = Member(topics, frozenset(tps("t", 0)), generation=4)
    shares = share_partitions({"t": 2}, {"a": stale, "b": fresh})
    assert shares["b"] == tps("t", 0)
    assert shares["a"] == tps("t", 1)


def test_members_get_only_topics_they_subscribe_to() -> None:
    shares = share_partitions(
        {"x": 3, "y": 1}, {"a": Member(frozenset({"x"})), "b": Member(frozenset({"x", "y"}))}
    )
    assert per_topic(shares["a"], "y") == 0
    assert per_topic(shares["b"], "y") == 1
    assert sorted(shares["a"] + shares["b"]) == sorted(tps("x", 0, 1, 2) + tps("y", 0))


def test_claims_round_trip_and_foreign_ones_are_empty() -> None:
    owned = frozenset(tps("t", 0, 5))
    assert decode_claim(encode_claim(7, owned)) == (7, owned)
    assert decode_claim(b"") == (-1, frozenset())
    assert decode_claim(b"\x00\x01sticky") == (-1, frozenset())


members_st = st.dictionaries(
    st.sampled_from("abcde"),
    st.tuples(
        st.frozensets(st.sampled_from("xyz"), min_size=1),
        st.frozensets(st.tuples(st.sampled_from("xyz"), st.integers(0, 7))),
        st.integers(-1, 5),
    ),
    min_size=1,
)


@given(counts=st.dictionaries(st.sampled_from("xyz"), st.integers(0, 8)), raw=members_st)
def test_every_partition_once_and_each_topic_even(
    counts: dict[str, int], raw: dict[str, tuple[frozenset[str], frozenset[tuple[str, int]], int]]
) -> None:
    members = {
        name: Member(topics, frozenset(TopicPartition(t, p) for t, p in owned), generation)
        for name, (topics, owned, generation) in raw.items()
    }
    shares = share_partitions(counts, members)
    everything = [tp for share in shares.values() for tp in share]
    expected = [
        TopicPartition(t, p)
        for t, n in counts.items()
        if any(t in m.topics for m in members.values())
        for p in range(n)
    ]
    assert sorted(everything) == sorted(expected)
    for topic in counts:
        subscribed = [n for n, m in members.items() if topic in m.topics]
        sizes = [per_topic(shares[n], topic) for n in subscribed]
        if sizes:
            assert max(sizes) - min(sizes) <= 1
        for name, share in shares.items():
            if topic not in members[name].topics:
                assert per_topic(share, topic) == 0
    # Stable: the same inputs give the same shares, and the shares are a fixed point.
    assert share_partitions(counts, members) == shares
    settled = {
        name: Member(m.topics, frozenset(shares[name]), m.generation + 1)
        for name, m in members.items()
    }
    assert share_partitions(counts, settled) == shares
