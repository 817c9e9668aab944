"""Entropy: Shannon entropy of the content, overall and per block."""

from __future__ import annotations

import math
from collections import Counter

from azuld.plugin import Feature, Filters, Job, Plugin

__all__ = ["Entropy", "block_entropies", "shannon_entropy"]

BLOCK_BYTES = 4096
# Per-block values beyond this many are not reported (azul-runner caps values per feature at 1000).
MAX_BLOCKS = 1000


def shannon_entropy(data: bytes) -> float:
    """Bits per byte, 0.0 (constant) to 8.0 (uniform)."""
    if not data:
        return 0.0
    total = len(data)
    return -sum(n / total * math.log2(n / total) for n in Counter(data).values()) + 0.0


def block_entropies(data: bytes, block_bytes: int = BLOCK_BYTES) -> list[float]:
    return [shannon_entropy(data[i : i + block_bytes]) for i in range(0, len(data), block_bytes)]


class Entropy(Plugin):
    """Shannon entropy of the content, overall and per 4 KiB block."""

    name = "Entropy"
    version = "1.0.0"
    features = (
        Feature("entropy", "Shannon entropy of the whole content, in bits per byte", "float"),
        Feature(
            "entropy_block", "Entropy of each 4 KiB block (offset and size say which)", "float"
        ),
        Feature("entropy_max_block", "Highest block entropy", "float"),
    )
    filters = Filters(actions=("sourced", "extracted"))

    async def execute(self, job: Job) -> None:
        data = await job.read()
        job.add_feature("entropy", round(shannon_entropy(data), 4))
        blocks = block_entropies(data)
        for index, value in enumerate(blocks[:MAX_BLOCKS]):
            offset = index * BLOCK_BYTES
            size = min(BLOCK_BYTES, len(data) - offset)
            job.add_feature("entropy_block", round(value, 4), offset=offset, size=size)
        if blocks:
            job.add_feature("entropy_max_block", round(max(blocks), 4))
