"""The Unbox plugin: a job's archive in, its members back as `extracted` children."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from functools import partial

import trio

from azuld.plugin import Feature, Filters, Job, OptOut, Plugin
from azuld.plugins.unbox.extract import extract
from azuld.plugins.unbox.guards import check_depth
from azuld.plugins.unbox.limits import MAX_SKIP_REPORTS, Limits
from azuld.plugins.unbox.sniff import SUPPORTED_FORMATS, sniff_container

__all__ = ["Unbox"]


def _parent_name(job: Job) -> str:
    for node in reversed(job.event.source.path):
        if node.filename:
            return node.filename
    return ""


class Unbox(Plugin):
    """Extracts zip, tar, gzip, bzip2, xz, lzma, 7z and rar archives into child binaries."""

    name = "Unbox"
    version = "1.0.0"
    features = (
        Feature("archive_member_count", "Number of entries the archive lists", "integer"),
        Feature("archive_skipped", "A member not extracted, and why ('name: reason')", "string"),
        Feature("archive_password", "Password that opened encrypted members", "string"),
        Feature("archive_truncated", "Why extraction stopped early", "string"),
    )
    filters = Filters(actions=("sourced", "extracted"), data_types={"content": SUPPORTED_FORMATS})

    def __init__(self, config: Mapping[str, str] | None = None) -> None:
        super().__init__(config)
        self.limits = Limits.from_config(self.config)

    async def execute(self, job: Job) -> None:
        limits = self.limits
        check_depth(len(job.event.source.path), limits)
        data = await job.read()
        container = sniff_container(data, job.event.entity.file_format)
        if container is None:
            fmt = job.event.entity.file_format or "unknown"
            raise OptOut("unsupported-format", f"Unbox does not extract {fmt} content")
        stop = threading.Event()
        try:
            result = await trio.to_thread.run_sync(
                partial(extract, data, container, limits, stop, _parent_name(job)),
                abandon_on_cancel=True,
            )
        finally:
            stop.set()  # a cancelled (timed-out) extraction stops at its next chunk
        for member in result.members:
            job.add_child(member.data, member.relationship, filename=member.filename)
        job.add_feature("archive_member_count", result.entries)
        for value in result.skipped[:MAX_SKIP_REPORTS]:
            job.add_feature("archive_skipped", value)
        if len(result.skipped) > MAX_SKIP_REPORTS:
            job.add_feature(
                "archive_skipped",
                f"... and {len(result.skipped) - MAX_SKIP_REPORTS} more skipped members",
            )
        for password in result.passwords:
            job.add_feature("archive_password", password)
        if result.truncated:
            job.add_feature("archive_truncated", result.truncated)
        for message in result.malformed:
            job.add_feature("malformed", message)
        job.add_info(
            {
                "container": result.container,
                "compression": result.relationship.get("compression", ""),
                "member_count": result.entries,
                "member_count_exact": result.entries_exact,
                "extracted": len(result.members),
                "skipped": len(result.skipped),
                "extracted_bytes": result.total_bytes,
                "truncated": result.truncated,
            }
        )
