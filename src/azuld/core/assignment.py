"""How instances share partitions: each topic spread evenly, and partitions kept where they are.

Several azuld instances on one Kafka share the partitions of every topic they dispatch from. The
group leader computes the shares at every rebalance. What matters for dispatch is that each
topic's partitions spread over the instances (a source with 4 partitions on 2 instances: 2 each),
not only the total: Kafka's sticky assignor balances totals, and can leave a whole source with one
instance. And a partition that moves costs a hand-over (leases, commits), so partitions stay with
their current owner whenever the even spread allows.

Per topic, with `n` partitions over `m` subscribed members, every member gets `n // m` and
`n % m` of them one more. Those extra ones go first to members that hold more of the topic
already (fewer moves), then to those with the fewest partitions so far (so the remainders of
different topics land on different members). Sans-I/O: the Kafka adapter does the wire format.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from azuld.core.cursor import TopicPartition

__all__ = ["Member", "decode_claim", "encode_claim", "share_partitions"]


@dataclass(frozen=True, slots=True)
class Member:
    """One instance in the group: what it subscribes to and what it owns now (its claim)."""

    topics: frozenset[str]
    owned: frozenset[TopicPartition] = frozenset()
    generation: int = -1  # of the assignment `owned` came from; the newer claim wins a conflict


class _Claim(msgspec.Struct, array_like=True):
    generation: int
    owned: list[tuple[str, int]] = []


def encode_claim(generation: int, owned: frozenset[TopicPartition]) -> bytes:
    """A member's claim, as the user data of its group membership."""
    rows = sorted((tp.topic, tp.partition) for tp in owned)
    return msgspec.json.encode(_Claim(generation, rows))


def decode_claim(data: bytes) -> tuple[int, frozenset[TopicPartition]]:
    """`(generation, owned)`; an empty or foreign claim is `(-1, nothing)`."""
    try:
        claim = msgspec.json.decode(data, type=_Claim)
    except msgspec.DecodeError:
        return -1, frozenset()
    return claim.generation, frozenset(TopicPartition(t, p) for t, p in claim.owned)


def _current_owners(members: Mapping[str, Member]) -> dict[TopicPartition, str]:
    """Who holds each partition now; of two claims on one partition, the newer generation's."""
    owners: dict[TopicPartition, str] = {}
    for name in sorted(members):
        member = members[name]
        for tp in member.owned:
            held = owners.get(tp)
            if held is None or member.generation > members[held].generation:
                owners[tp] = name
    return owners


def share_partitions(
    partition_counts: Mapping[str, int], members: Mapping[str, Member]
) -> dict[str, list[TopicPartition]]:
    """Each member's partitions (sorted): every topic spread evenly over the members subscribed
    to it, moving as few partitions as that allows."""
    shares: dict[str, list[TopicPartition]] = {name: [] for name in members}
    owners = _current_owners(members)
    for topic in sorted(partition_counts):
        subscribed = sorted(name for name, m in members.items() if topic in m.topics)
        count = partition_counts[topic]
        if not subscribed or count <= 0:
            continue
        tps = [TopicPartition(topic, p) for p in range(count)]
        holding = dict.fromkeys(subscribed, 0)
        for tp in tps:
            owner = owners.get(tp)
            if owner in holding:
                holding[owner] += 1
        base, extra = divmod(count, len(subscribed))
        # Who gets one more: those holding more of the topic, then those with fewer so far.
        ranked = sorted(subscribed, key=lambda n: (-holding[n], len(shares[n]), n))
        quota = {name: base + (1 if i < extra else 0) for i, name in enumerate(ranked)}
        given: dict[str, list[TopicPartition]] = {name: [] for name in subscribed}
        unplaced: list[TopicPartition] = []
        for tp in tps:
            owner = owners.get(tp)
            if owner in given and len(given[owner]) < quota[owner]:
                given[owner].append(tp)
            else:
                unplaced.append(tp)
        for tp in unplaced:
            name = min(
                (n for n in subscribed if len(given[n]) < quota[n]),
                key=lambda n: (len(shares[n]) + len(given[n]), n),
            )
            given[name].append(tp)
        for name, got in given.items():
            shares[name].extend(got)
    return {name: sorted(tps) for name, tps in shares.items()}
