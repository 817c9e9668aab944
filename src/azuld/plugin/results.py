"""Turning a finished `Job` into the status event azul-runner would post (runner reference 1.6).

Pure: given the job, the outcome and the datastreams its uploads returned, `build_status` returns
the `StatusEvent`. The main result is `enriched` (features/info only) or `augmented` (new streams,
alongside the input's content); each child is an `extracted` event built from its uploaded
`content` datastream, with the auto features `file_format`, `file_extension`, `magic`, `mime`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from azuld.identify import FileHasher, identify_bytes, to_datastream
from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    Author,
    BinaryEntity,
    BinaryEvent,
    Datastream,
    Feature,
    PathNode,
    Source,
    StatusEntity,
    StatusEvent,
)
from azuld.plugin.api import Child, FeatureValue, Job, _Outputs

__all__ = [
    "Outcome",
    "UploadKey",
    "build_status",
    "describe_bytes",
    "stripped_input",
    "uploads_needed",
]

# (label, sha256 of the bytes): an upload is made once per pair within a job.
UploadKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    runtime_seconds: float
    error: str = ""
    message: str = ""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _walk_children(children: list[Child]) -> Iterator[Child]:
    for child in children:
        yield child
        yield from _walk_children(child.children)


def uploads_needed(job: Job) -> dict[UploadKey, bytes]:
    """Every blob the job produced, by (label, sha256): new streams and children's content."""
    needed: dict[UploadKey, bytes] = {}
    outputs: list[_Outputs] = [job, *_walk_children(job.children)]
    for output in outputs:
        for label, data, _ in output.streams:
            needed[(label, _digest(data))] = data
    for child in _walk_children(job.children):
        needed[("content", _digest(child.data))] = child.data
    return needed


def describe_bytes(label: str, data: bytes) -> Datastream:
    """A datastream described locally (hashes and type), for local mode without a dispatcher."""
    hasher = FileHasher()
    hasher.update(data)
    return to_datastream(label, hasher.digests(), identify_bytes(data))


def stripped_input(event: BinaryEvent) -> BinaryEvent:
    """The job's event as a status carries it: features, streams and info emptied, id kept."""
    import msgspec

    entity = msgspec.structs.replace(event.entity, features=[], datastreams=[], info={})
    return msgspec.structs.replace(event, entity=entity)


def _features(values: list[FeatureValue]) -> list[Feature]:
    return [
        Feature(
            name=v.name, value=v.value, type=v.type, label=v.label, offset=v.offset, size=v.size
        )
        for v in values
    ]


def _with_label(stream: Datastream, label: str, language: str) -> Datastream:
    import msgspec

    return msgspec.structs.replace(stream, label=label, language=language)


def _result_event(
    author: Author,
    action: str,
    source: Source,
    node: PathNode,
    entity: BinaryEntity,
    now: datetime,
) -> BinaryEvent:
    return BinaryEvent(
        model_version=CURRENT_MODEL_VERSION,
        kafka_key="runner-placeholder",
        timestamp=now,
        author=author,
        action=action,  # type: ignore[arg-type]
        source=Source(
            name=source.name,
            timestamp=source.timestamp,
            references=source.references,
            security=source.security,
            settings=source.settings,
            path=[*source.path, node],
        ),
        entity=entity,
    )


def _child_events(
    author: Author,
    parent_source: Source,
    children: list[Child],
    uploaded: Mapping[UploadKey, Datastream],
    now: datetime,
) -> Iterator[BinaryEvent]:
    for child in children:
        content = _with_label(uploaded[("content", _digest(child.data))], "content", "")
        auto = [
            FeatureValue(name, value, "string")
            for name, value in (
                ("file_format", content.file_format),
                ("file_extension", content.file_extension),
                ("magic", content.magic),
                ("mime", content.mime),
            )
            if value
        ]
        if child.filename:
            auto.append(FeatureValue("filename", child.filename, "filepath"))
        streams = [content] + [
            _with_label(uploaded[(label, _digest(data))], label, language)
            for label, data, language in child.streams
        ]
        node = PathNode(
            author=author,
            action="extracted",
            sha256=content.sha256,
            timestamp=now,
            relationship=child.relationship,
            file_format=content.file_format,
            size=content.size,
            filename=child.filename,
        )
        event = _result_event(
            author,
            "extracted",
            parent_source,
            node,
            BinaryEntity(
                sha256=content.sha256,
                sha512=content.sha512,
                sha1=content.sha1,
                md5=content.md5,
                size=content.size,
                mime=content.mime,
                magic=content.magic,
                file_format=content.file_format,
                file_extension=content.file_extension,
                features=_features(auto + child.features),
                datastreams=streams,
                info=child.info,
            ),
            now,
        )
        yield event
        yield from _child_events(author, event.source, child.children, uploaded, now)


def build_status(
    author: Author,
    job: Job,
    outcome: Outcome,
    uploaded: Mapping[UploadKey, Datastream],
    now: datetime,
) -> StatusEvent:
    """The final status for `job`; results only for completed outcomes."""
    status = outcome.status
    results: list[BinaryEvent] = []
    if status == "completed":
        event = job.event
        if not job.empty:
            new_streams = [
                _with_label(uploaded[(label, _digest(data))], label, language)
                for label, data, language in job.streams
            ]
            action = "augmented" if new_streams else "enriched"
            input_entity = event.entity
            entity = BinaryEntity(
                sha256=input_entity.sha256,
                sha512=input_entity.sha512,
                sha1=input_entity.sha1,
                md5=input_entity.md5,
                size=input_entity.size,
                mime=input_entity.mime,
                magic=input_entity.magic,
                file_format=input_entity.file_format,
                file_extension=input_entity.file_extension,
                features=_features(job.features),
                info=job.info,
                datastreams=(
                    [s for s in input_entity.datastreams if s.label == "content"] + new_streams
                    if new_streams
                    else []
                ),
            )
            node = PathNode(author=author, action=action, sha256=input_entity.sha256, timestamp=now)  # type: ignore[arg-type]
            results.append(_result_event(author, action, event.source, node, entity, now))
        results.extend(_child_events(author, event.source, job.children, uploaded, now))
        if not results:
            status = "completed-empty"
    return StatusEvent(
        model_version=CURRENT_MODEL_VERSION,
        kafka_key="runner-placeholder",
        timestamp=now,
        author=author,
        entity=StatusEntity(
            input=stripped_input(job.event),
            status=status,  # type: ignore[arg-type]
            runtime=outcome.runtime_seconds,
            error=outcome.error,
            message=outcome.message,
            results=results,
        ),
    )
