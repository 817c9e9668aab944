"""Which events a plugin sees (reference sections 5.4 and 6).

`skip_reason` returns `None` when the event goes to the plugin, or the name of the filter that
skipped it, in Go's `"<Pipeline>-<state>"` form (e.g. `FilterConsumerRules-reject_source`). The
names are what `info.filters` and the metrics count.
"""

from __future__ import annotations

from azuld.core.params import ConsumeParams
from azuld.models.events import BinaryEvent, StatusEvent

__all__ = ["ACTIVE_MAX_DEPTH", "PASSIVE_MAX_DEPTH", "skip_reason"]

# Go filters `len(source.path) > MaxDepth`; active fetches are one level stricter.
ACTIVE_MAX_DEPTH = 10
PASSIVE_MAX_DEPTH = 11

_RULES = "FilterConsumerRules-"
_NO_STREAMS: dict[str, tuple[str, ...]] = {}


def skip_reason(event: BinaryEvent | StatusEvent | None, params: ConsumeParams) -> str | None:
    """Why `params` skips `event`, or `None` if the plugin should get it.

    Binary events are judged on themselves, status events on their `entity.input`; events of the
    other models (`None` here) always pass.
    """
    if event is None:
        return None
    is_status = isinstance(event, StatusEvent)
    subject = event.entity.input if isinstance(event, StatusEvent) else event

    max_depth = ACTIVE_MAX_DEPTH if params.active else PASSIVE_MAX_DEPTH
    if len(subject.source.path) > max_depth:
        return "FilterTooDeep-too_deep"

    if params.r_source and subject.source.name not in params.r_source:
        return _RULES + "reject_source"
    if params.r_action and subject.action not in params.r_action:
        return _RULES + "reject_event_type"
    if subject.action in params.d_action:
        return _RULES + "reject_event_type"
    if params.d_self and event.author.name == params.name:
        return _RULES + "reject_self"
    if is_status:
        return None

    streams = params.stream_map if params.streams else _NO_STREAMS  # no dict built per event
    seen_labels: set[str] = set()
    has_content = False
    for stream in subject.entity.datastreams:
        if stream.label == "content":
            has_content = True
            if params.under_content_size > 0 and stream.size > params.under_content_size:
                return _RULES + "reject_content_too_large"
            if params.over_content_size > 0 and stream.size < params.over_content_size:
                return _RULES + "reject_content_too_small"
        if streams:
            formats = streams.get(stream.label)
            if formats is None:
                formats = streams.get("*")
                if formats is None:
                    return _RULES + "reject_stream"
            seen_labels.add(stream.label)
            if formats and not stream.file_format.startswith(formats):
                return _RULES + "reject_file_format"
    # Several labels: each named label must be present. Go counts streams here, so two `content`
    # streams could stand in for a missing label (quirk 15); azuld counts distinct labels.
    if len(streams) > 1 and not (streams.keys() - {"*"}) <= seen_labels:
        return _RULES + "reject_stream"
    needs_content = (
        params.r_content or params.under_content_size > 0 or params.over_content_size > 0
    )
    if needs_content and not has_content:
        return _RULES + "reject_no_content"
    return None
