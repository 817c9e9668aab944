"""A posted body, decoded and checked: what `POST /api/v2/event` stores and acts on (reference 2.2).

`prepare_post` turns the bytes of a post into the records to append (the events', then the replay
cache entries' of the jobs the post completes), the failures to report, and the summaries the
dispatcher applies once the records are durable. It does no I/O and its decoded events do not
outlive it: what the rest of a post needs is bytes, counts and summaries (`core.publish` says
which record goes to which topic).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from azuld.core.keys import system_topic
from azuld.core.publish import Outgoing, prepare_events
from azuld.core.replay import CacheRules, CacheUpdates, cache_updates, config_digest
from azuld.core.validation import check_event
from azuld.errors import AllFiltered, BadRequest, PayloadTooLarge, Unprocessable
from azuld.models.avro import decode_posted
from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    MODELS,
    BinaryEvent,
    GenericEvent,
    PluginEvent,
    StatusEvent,
)
from azuld.models.responses import PostFailure

__all__ = [
    "DECODERS",
    "PreparedPost",
    "StatusSummary",
    "decode_events",
    "decode_status_summary",
    "prepare_post",
]

_encode = msgspec.json.Encoder().encode
# The models azuld decodes into typed events; the others are stored as posted (`GenericEvent`).
_TYPED: dict[str, type[Any]] = {
    "binary": BinaryEvent,
    "status": StatusEvent,
    "plugin": PluginEvent,
}
DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    model: msgspec.json.Decoder(cls) for model, cls in _TYPED.items()
}
_LIST_DECODERS: dict[str, msgspec.json.Decoder[list[Any]]] = {
    "binary": msgspec.json.Decoder(list[BinaryEvent]),
    "status": msgspec.json.Decoder(list[StatusEvent]),
    "plugin": msgspec.json.Decoder(list[PluginEvent]),
}


class StatusSummary(msgspec.Struct, frozen=True, gc=False):
    """What applying a posted status to its job needs of it. A post keeps these, not its decoded
    statuses, across the log append: the dozens of containers of each decoded status would
    otherwise live through the await, be promoted to gc's oldest generation and make full
    collections more frequent.
    """

    job_id: str  # the status's `entity.input.dequeued`
    status: str
    sha256: str  # of the job's binary, and what a failure says
    error: str
    message: str
    author: str = ""  # the posting plugin's name and version
    version: str = ""

    @classmethod
    def of(cls, event: StatusEvent) -> StatusSummary:
        entity = event.entity
        job = entity.input
        author = event.author
        return cls(
            job.dequeued,
            entity.status,
            job.entity.sha256,
            entity.error,
            entity.message,
            author.name,
            author.version,
        )


class _Sha(msgspec.Struct, frozen=True, gc=False):
    sha256: str = ""


class _Input(msgspec.Struct, gc=False):
    dequeued: str = ""
    entity: _Sha = _Sha()


class _Ending(msgspec.Struct, gc=False):
    input: _Input
    status: str
    error: str = ""
    message: str = ""


class _Who(msgspec.Struct, gc=False):
    name: str
    version: str = ""


class _StatusHead(msgspec.Struct, gc=False):
    """What a followed status is read for: its results, features and the rest are skipped."""

    author: _Who
    entity: _Ending


_decode_head = msgspec.json.Decoder(_StatusHead).decode


def decode_status_summary(value: bytes) -> StatusSummary | None:
    """The summary of a stored status (another instance's, followed from the log), without
    decoding its results; `None` for a value that is not a status."""
    try:
        head = _decode_head(value)
    except msgspec.DecodeError:
        return None
    entity = head.entity
    return StatusSummary(
        entity.input.dequeued,
        entity.status,
        entity.input.entity.sha256,
        entity.error,
        entity.message,
        head.author.name,
        head.author.version,
    )


@dataclass(slots=True)
class PreparedPost:
    """A posted body, checked and encoded: what `Dispatcher.publish` stores and acts on."""

    records: list[Outgoing]  # the events' records, then the replay-cache entries' records
    replay: CacheUpdates  # what the statuses change in the replay cache once stored
    failures: list[PostFailure]
    total_ok: int
    authors: Counter[str]  # valid events per author name
    statuses: list[StatusSummary]  # for model `status`: one per valid status
    configs: dict[tuple[str, str], str]  # for model `plugin`: (name, version) -> config digest
    duplicates: int = 0  # valid statuses not stored: their job's final status already was


def prepare_post(
    model: str,
    body: bytes,
    *,
    prefix: str,
    max_events: int,
    cache: CacheRules | None = None,
    store: Callable[[StatusEvent], bool] | None = None,
    vet: Callable[[StatusEvent], str | None] | None = None,
    avro: bool = False,
) -> PreparedPost:
    """Decode, check and encode a posted body.

    Args:
        avro: the body is an Avro bulk record (`avro-format=true`), not JSON; it decodes to
            the same events, and everything after decoding is the same.
        cache: what decides the replay cache's share of stored statuses (`core.replay`);
            `None` when the cache is off.
        vet: for statuses, what is wrong with one that `check_event` passed (a failure, as
            theirs), or `None`.
        store: for statuses, whether to store each valid one; one it refuses is acknowledged
            (counted in `total_ok`, a post is idempotent) but neither stored nor acted on: the
            final status of its job is stored already.

    Raises:
        BadRequest: empty body or unknown model.
        PayloadTooLarge: more than `max_events` events.
        Unprocessable: not JSON (not Avro of a model azuld has schemas for), an old
            `model_version`, or an event of the wrong shape.
        AllFiltered: no event was valid.
    """
    if model not in MODELS:
        raise BadRequest(
            f"not a registered model type: {model!r}; expected one of {', '.join(MODELS)}"
        )
    if not body:
        raise BadRequest("no events were provided to be published", title="Empty Request")
    events = decode_posted(model, body) if avro else decode_events(model, body)
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"{len(events)} events in one post; the limit is "
            f"{max_events} (dispatch.max_events_per_post)"
        )
    failures: list[PostFailure] = []
    valid: list[Any] = []
    for event in events:
        problem = check_event(event if not isinstance(event, dict) else _envelope(event))
        if problem is None and vet is not None and model == "status":
            problem = vet(event)
        if problem:
            failures.append(PostFailure(event=_encode(event).decode(), error=problem))
        else:
            valid.append(event)
    if not valid:
        raise AllFiltered(
            "failed to produce any of the provided events as they were all filtered out by "
            f"the following filters [], with {len(failures)} response failures which are: "
            f"[{'; '.join(f.error for f in failures)}]"
        )
    total_ok = len(valid)
    if store is not None and model == "status":
        valid = [event for event in valid if store(event)]
    registered = (
        {(e.entity.name, e.entity.version): config_digest(e.entity.config) for e in valid}
        if model == "plugin"
        else {}
    )
    replay = (
        cache_updates(valid, cache) if model == "status" and cache is not None else CacheUpdates()
    )
    records = prepare_events(prefix, model, valid)
    records += [
        Outgoing(system_topic(prefix, "replay"), key, value) for key, value in replay.entries
    ]
    return PreparedPost(
        records=records,
        replay=replay,
        failures=failures,
        total_ok=total_ok,
        duplicates=total_ok - len(valid),
        authors=Counter(
            event["author"]["name"] if isinstance(event, dict) else event.author.name
            for event in valid
        ),
        statuses=[StatusSummary.of(event) for event in valid] if model == "status" else [],
        configs=registered,
    )


def decode_events(model: str, body: bytes) -> list[Any]:
    """Decode a posted body: a JSON array of events, or one event object.

    As in Go, the array must start at byte 0, a decode failure or a `model_version` below 6 fails
    the whole request (422), and invalid-but-decodable events are left for `check_event`.
    """
    if len(body) <= 2:
        raise Unprocessable(
            "ensure events were in json format: event message too small",
            title="PostEvent TransformEvents invalid events",
        )
    typed = _LIST_DECODERS.get(model)
    if typed is not None and body[:1] == b"[":
        # The common case in one pass; anything unusual takes the careful path below, which
        # also words the errors.
        try:
            fast = typed.decode(body)
        except msgspec.DecodeError:
            pass
        else:
            if all(event.model_version >= CURRENT_MODEL_VERSION for event in fast):
                return fast
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise Unprocessable(
            f"ensure events were in json format: event message invalid json: {exc}",
            title="PostEvent TransformEvents invalid events",
        ) from None
    items = raw if body[:1] == b"[" and isinstance(raw, list) else [raw]
    events: list[Any] = []
    cls = _TYPED.get(model)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise Unprocessable(
                f"ensure events were in json format: event {index} is not a JSON object",
                title="PostEvent TransformEvents invalid events",
            )
        version = item.get("model_version", 0)
        if not isinstance(version, int) or version < CURRENT_MODEL_VERSION:
            raise Unprocessable(
                f"ensure events were in json format: event message version was too old "
                f"(event {index} has model_version {version!r}; azuld needs "
                f"{CURRENT_MODEL_VERSION})",
                title="PostEvent TransformEvents invalid events",
            )
        if cls is None:
            try:
                _envelope(item)
            except msgspec.ValidationError as exc:
                raise _corrupt(index, exc) from None
            events.append(item)
            continue
        try:
            events.append(msgspec.convert(item, cls))
        except msgspec.ValidationError as exc:
            raise _corrupt(index, exc) from None
    return events


def _envelope(raw: dict[str, Any]) -> GenericEvent:
    return msgspec.convert(raw, GenericEvent)


def _corrupt(index: int, exc: msgspec.ValidationError) -> Unprocessable:
    return Unprocessable(
        f"ensure events were in json format: event message version was too old or was corrupt: "
        f"event {index}: {exc}",
        title="PostEvent TransformEvents invalid events",
    )
