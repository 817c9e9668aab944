"""The Entropy plugin: the Shannon entropy helpers and the features it reports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from azuld.plugin import run_local
from azuld.plugins.entropy import BLOCK_BYTES, Entropy, block_entropies, shannon_entropy


def test_entropy_of_nothing_is_zero() -> None:
    assert shannon_entropy(b"") == 0.0


def test_entropy_of_a_constant_is_zero() -> None:
    assert shannon_entropy(b"\x00" * 1000) == 0.0


def test_entropy_of_every_byte_once_is_eight() -> None:
    assert shannon_entropy(bytes(range(256))) == pytest.approx(8.0)


def test_entropy_of_two_symbols_is_one() -> None:
    assert shannon_entropy(b"ab" * 100) == pytest.approx(1.0)


def test_blocks() -> None:
    data = bytes(BLOCK_BYTES) + bytes(range(256)) * (BLOCK_BYTES // 256) + b"ab"
    assert block_entropies(data) == pytest.approx([0.0, 8.0, 1.0])
    assert block_entropies(b"") == []


async def test_plugin_features(tmp_path: Path) -> None:
    data = bytes(BLOCK_BYTES) + bytes(range(256)) * (BLOCK_BYTES // 256) + b"ab"
    path = tmp_path / "sample.bin"
    path.write_bytes(data)
    [status] = await run_local(Entropy(), [path])
    assert status.entity.status == "completed"
    [result] = status.entity.results
    assert result.action == "enriched"
    features = result.entity.features
    [whole] = [f for f in features if f.name == "entropy"]
    assert float(whole.value) == pytest.approx(shannon_entropy(data), abs=1e-4)
    assert whole.type == "float"
    blocks = [(f.value, f.offset, f.size) for f in features if f.name == "entropy_block"]
    assert blocks == [
        ("0.0", 0, BLOCK_BYTES),
        ("8.0", BLOCK_BYTES, BLOCK_BYTES),
        ("1.0", 2 * BLOCK_BYTES, 2),
    ]
    assert [f.value for f in features if f.name == "entropy_max_block"] == ["8.0"]


async def test_random_data_is_near_eight(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(64 * 1024))
    [status] = await run_local(Entropy(), [path])
    [result] = status.entity.results
    [whole] = [f.value for f in result.entity.features if f.name == "entropy"]
    assert float(whole) > 7.9


async def test_empty_file_has_entropy_zero_and_no_blocks(tmp_path: Path) -> None:
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    [status] = await run_local(Entropy(), [path])
    assert status.entity.status == "completed"
    [result] = status.entity.results
    names = [(f.name, f.value) for f in result.entity.features]
    assert names == [("entropy", "0.0")]
