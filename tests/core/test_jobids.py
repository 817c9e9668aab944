"""Signed job ids: they round-trip, and anything else (made up, changed, another secret, another
format) is not one of them."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azuld.core.cursor import TopicPartition
from azuld.core.delivery import JobRef, Lane
from azuld.core.jobids import JobIds, author_may_report

TP = TopicPartition("azul.t.s.binary.sourced", 3)
IDS = JobIds(b"a secret shared by the cluster")


@pytest.mark.parametrize("lane", Lane.ORDER)
def test_a_job_id_round_trips(lane: str) -> None:
    ref = JobRef("Name-1.0+x-binary-a.b-sourced-ELH", lane, TP, 1234)
    job_id = IDS.make(ref, 7)
    assert job_id.startswith(f"azd2|Name-1.0+x-binary-a.b-sourced-ELH|{lane}|{TP.topic}|3|1234|7|")
    assert IDS.parse(job_id) == (ref, 7)
    assert IDS.problem(job_id) is None


def test_a_changed_or_made_up_id_is_refused() -> None:
    ref = JobRef("Victim-1-binary-allsrc-alltype-L", Lane.LIVE, TP, 5)
    job_id = IDS.make(ref, 0)
    unsigned, _, mac = job_id.rpartition("|")
    changed = [
        job_id.replace("|5|0|", "|6|0|"),  # another event
        job_id.replace("|5|0|", "|5|1|"),  # another attempt
        job_id.replace("Victim-1", "Other-1"),  # another plugin key
        f"{unsigned}|{'0' * len(mac)}",  # a made-up signature
        JobIds(b"another cluster").make(ref, 0),  # another secret
    ]
    for forged in changed:
        assert IDS.parse(forged) is None
        problem = IDS.problem(forged)
        assert problem is not None
        assert "not one azuld handed out" in problem


@pytest.mark.parametrize(
    "job_id",
    ["", "727f9b8c-0c4e-4b2e-9d3f-6c1e2a7b8c9d", "azd1|k|live|t|0|1|0", "anything|else"],
)
def test_other_formats_are_not_ours_to_judge(job_id: str) -> None:
    # The Go dispatcher's ids and azuld's unsigned ids of earlier versions: their statuses are
    # stored and finish nothing.
    assert IDS.parse(job_id) is None
    assert IDS.problem(job_id) is None


def test_who_may_report_a_job() -> None:
    assert author_may_report("Unbox", "Unbox")
    assert author_may_report("Unbox-sevenzip", "Unbox")  # a runner's multiplugin
    assert not author_may_report("Unboxer", "Unbox")
    assert not author_may_report("Entropy", "Unbox")


# -- properties (Hypothesis) -----------------------------------------------------------------------

# No example database: keep runs free of files in the working tree. A failure prints its minimal
# example (and a `@reproduce_failure` blob) all the same.
PLAIN = settings(max_examples=100, database=None)

PLUGIN_PART = st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20)
PLUGIN_KEYS = st.lists(PLUGIN_PART, min_size=1, max_size=6).map("-".join)
TOPICS = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=60)


@PLAIN
@given(
    key=PLUGIN_KEYS,
    lane=st.sampled_from(Lane.ORDER),
    topic=TOPICS,
    partition=st.integers(0, 2**31 - 1),
    offset=st.integers(0, 2**63 - 1),
    attempt=st.integers(0, 10_000),
)
def test_job_id_round_trips(
    key: str, lane: str, topic: str, partition: int, offset: int, attempt: int
) -> None:
    ref = JobRef(key, lane, TopicPartition(topic, partition), offset)
    assert IDS.parse(IDS.make(ref, attempt)) == (ref, attempt)


@PLAIN
@given(
    st.text(max_size=80)
    | st.lists(st.text(max_size=8) | st.sampled_from(["azd2", *Lane.ORDER, "0", "-1"])).map(
        "|".join
    )
)
def test_any_text_parses_as_a_job_id_or_none(job_id: str) -> None:
    # Made-up text is never one azuld signed.
    assert IDS.parse(job_id) is None
    assert (IDS.problem(job_id) is None) is (not job_id.startswith("azd2|"))
