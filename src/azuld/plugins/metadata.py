"""Metadata: features from what the event says, without reading any content.

An example of a plugin that needs no content (like netinfo- or office-metadata-style plugins):
it also takes `mapped` events, which carry no `content` stream.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from azuld.plugin import Feature, Filters, Job, Plugin

__all__ = ["Metadata"]


class Metadata(Plugin):
    """Source references, submitter, depth and filename extension as features."""

    name = "Metadata"
    version = "1.0.0"
    requires_content = False
    features = (
        Feature("source_reference", "A source reference, as key=value", "string"),
        Feature("submitted_by", "Who submitted the first binary of the path", "string"),
        Feature("path_depth", "How many steps from the submitted binary", "integer"),
        Feature("filename_extension", "Extension of the name it was found under", "string"),
    )
    filters = Filters(
        actions=("sourced", "extracted", "mapped"), data_types={}, max_content_bytes=0
    )

    async def execute(self, job: Job) -> None:
        source = job.event.source
        for key, value in sorted(source.references.items()):
            job.add_feature("source_reference", f"{key}={value}")
        job.add_feature("submitted_by", source.path[0].author.name)
        job.add_feature("path_depth", len(source.path) - 1)
        filename = source.path[-1].filename
        suffix = PurePosixPath(filename).suffix.lstrip(".").lower() if filename else ""
        if suffix:
            job.add_feature("filename_extension", suffix)
