"""`GET /openapi.json`: an OpenAPI 3.1 document of every route azuld serves.

The document is static: it is built once, at import, as a plain dict. The event and response
bodies are JSON Schemas generated from the msgspec wire structs (`azuld.models`), so the document
cannot drift from what the handlers encode; the rest (routes, parameters, status codes) is written
out here and checked against the live daemon by `tests/http/test_openapi.py` (schemathesis).
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Blueprint, Response

from azuld import __version__
from azuld.core.delivery import Lane
from azuld.core.keys import NAME_PATTERN
from azuld.core.validation import SHA256_PATTERN
from azuld.http.ops import ReoffersRequest
from azuld.models.events import (
    BINARY_ACTIONS,
    MODELS,
    BinaryEvent,
    GenericEvent,
    PluginEvent,
    StatusEvent,
)
from azuld.models.responses import DataResponse, ErrorBody, FetchInfo, PostResponse

__all__ = ["OPENAPI", "PLUGIN_PART_PATTERN", "blueprint"]

blueprint = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{name}"

# `azuld.core.keys._PLUGIN_PART`: plugin names and versions.
PLUGIN_PART_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}$"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": _REF.format(name=name)}


def _struct_schemas() -> dict[str, Schema]:
    """JSON Schemas of the wire structs, as OpenAPI components (refs point into components)."""
    _, components = msgspec.json.schema_components(
        [
            BinaryEvent,
            StatusEvent,
            PluginEvent,
            GenericEvent,
            PostResponse,
            FetchInfo,
            DataResponse,
            ErrorBody,
            ReoffersRequest,
        ],
        ref_template=_REF,
    )
    components["GenericEvent"]["description"] = (
        "The envelope of the models azuld stores without interpreting (delete, download, insert, "
        "retrohunt): only these keys are checked; the whole object is stored as posted, with "
        "`kafka_key` replaced."
    )
    components["ErrorBody"]["description"] = (
        "Every error: `status` is the HTTP status code as a string, `error_enum` is always present."
    )
    components["ErrorBody"]["properties"]["status"]["pattern"] = "^[1-5][0-9][0-9]$"
    return components


def _extra_schemas() -> dict[str, Schema]:
    """Schemas of replies that are not msgspec structs (dicts built by the handlers)."""
    event = {"anyOf": [_ref(n) for n in ("BinaryEvent", "StatusEvent", "PluginEvent")]}
    event["anyOf"].append(_ref("GenericEvent"))
    return {
        "Event": {
            "title": "Event",
            "description": "An event of any model; `?model=` / the path says which.",
            **event,
        },
        "EventOrEvents": {
            "title": "EventOrEvents",
            "description": (
                "A JSON array of events (the `[` must be the first byte) or one event object."
            ),
            "anyOf": [{"type": "array", "items": _ref("Event")}, _ref("Event")],
        },
        "FetchEvents": {
            "title": "FetchEvents",
            "description": "The `events` part of a fetch reply.",
            "type": "object",
            "properties": {"events": {"type": "array", "items": _ref("Event")}},
            "required": ["events"],
        },
        "FetchReply": {
            "title": "FetchReply",
            "description": (
                "The two parts of a fetch reply, in this order: `info` (filename `info.json`) "
                "and `events` (filename `events.json`), each JSON with the part Content-Type "
                "`application/octet-stream`."
            ),
            "type": "object",
            "properties": {"info": _ref("FetchInfo"), "events": _ref("FetchEvents")},
            "required": ["info", "events"],
        },
        "Health": {
            "title": "Health",
            "type": "object",
            "properties": {"status": {"const": "ok"}},
            "required": ["status"],
        },
        "Readiness": {
            "title": "Readiness",
            "type": "object",
            "properties": {
                "ready": {"type": "boolean"},
                "reasons": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Why the event log or the blob store is not usable.",
                },
            },
            "required": ["ready", "reasons"],
        },
        "PluginFailure": {
            "title": "PluginFailure",
            "type": "object",
            "properties": {
                "at": {"type": "number", "description": "Unix time, seconds."},
                "sha256": {"type": "string"},
                "status": {"type": "string"},
                "error": {"type": "string"},
                "message": {"type": "string"},
            },
            "required": ["at", "sha256", "status", "error", "message"],
        },
        "PluginKeySummary": {
            "title": "PluginKeySummary",
            "description": "One plugin key as this instance sees it.",
            "type": "object",
            "properties": {
                "key": {"type": "string"},
                "name": {"type": "string"},
                "version": {"type": "string"},
                "model": {"enum": list(MODELS)},
                "active": {"type": "boolean"},
                "lanes": {"type": "array", "items": {"enum": list(Lane.ORDER)}},
                "lag": {
                    "type": "object",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                    "description": "Unfinished events per lane.",
                },
                "queued": {"type": "integer", "minimum": 0},
                "in_flight": {"type": "integer", "minimum": 0},
                "fetched": {"type": "integer", "minimum": 0},
                "finished": {
                    "type": "object",
                    "additionalProperties": {"type": "integer", "minimum": 0},
                    "description": "Finished jobs per final status.",
                },
                "errors_last_hour": {"type": "integer", "minimum": 0},
                "last_seen": {"type": "number", "description": "Unix time of the last fetch."},
                "recent_failures": {"type": "array", "items": _ref("PluginFailure")},
                "history": {
                    "type": "array",
                    "description": "Per-minute counts over the last hour (`minute` is Unix time).",
                    "items": {
                        "type": "object",
                        "properties": {"minute": {"type": "integer"}},
                        "required": ["minute"],
                        "additionalProperties": {"type": "integer"},
                    },
                },
            },
            "required": [
                "key",
                "name",
                "version",
                "model",
                "active",
                "lanes",
                "lag",
                "queued",
                "in_flight",
                "fetched",
                "finished",
                "errors_last_hour",
                "last_seen",
                "recent_failures",
                "history",
            ],
        },
        "Plugins": {
            "title": "Plugins",
            "type": "object",
            "properties": {"plugins": {"type": "array", "items": _ref("PluginKeySummary")}},
            "required": ["plugins"],
        },
        "SourceBinary": {
            "title": "SourceBinary",
            "description": "A binary of a source: what plugins found, and its extracted children.",
            "type": "object",
            "properties": {
                "sha256": {"type": "string"},
                "filename": {"type": "string"},
                "file_format": {"type": "string"},
                "size": {"type": "integer", "minimum": 0},
                "features": {
                    "type": "object",
                    "description": "{plugin name: {feature name: [values]}}",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "children": {"type": "array", "items": _ref("SourceBinary")},
            },
            "required": ["sha256", "filename", "file_format", "size", "features", "children"],
        },
        "FailedJob": {
            "title": "FailedJob",
            "description": "A job that ended in an error status (a dead letter).",
            "type": "object",
            "properties": {
                "job_id": {"type": "string", "description": "Its `dequeued`: give it to reoffer."},
                "plugin": {"type": "string"},
                "version": {"type": "string"},
                "status": {"type": "string", "pattern": "^error-"},
                "error": {"type": "string"},
                "message": {"type": "string", "description": "The last line of the message."},
                "sha256": {"type": "string"},
                "source": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
            },
            "required": [
                "job_id",
                "plugin",
                "version",
                "status",
                "error",
                "message",
                "sha256",
                "source",
                "at",
            ],
        },
        "FailedJobs": {
            "title": "FailedJobs",
            "type": "object",
            "properties": {"failed": {"type": "array", "items": _ref("FailedJob")}},
            "required": ["failed"],
        },
        "ReofferOutcome": {
            "title": "ReofferOutcome",
            "type": "object",
            "properties": {
                "job_id": {"type": "string"},
                "ok": {"type": "boolean"},
                "plugin_key": {"type": "string", "description": "When `ok`: whose job it is."},
                "reason": {"type": "string", "description": "When not `ok`: why."},
            },
            "required": ["job_id", "ok"],
        },
        "Reoffered": {
            "title": "Reoffered",
            "type": "object",
            "properties": {"reoffered": {"type": "array", "items": _ref("ReofferOutcome")}},
            "required": ["reoffered"],
        },
        "ReofferRecord": {
            "title": "ReofferRecord",
            "description": "Who re-offered which job to which plugin key, and when.",
            "type": "object",
            "properties": {
                "at": {"type": "string", "format": "date-time"},
                "by": {"type": "string"},
                "plugin_key": {"type": "string"},
                "job_id": {"type": "string"},
                "sha256": {"type": "string"},
            },
            "required": ["at", "by", "plugin_key", "job_id", "sha256"],
        },
        "Reoffers": {
            "title": "Reoffers",
            "type": "object",
            "properties": {"reoffers": {"type": "array", "items": _ref("ReofferRecord")}},
            "required": ["reoffers"],
        },
        "SourceTree": {
            "title": "SourceTree",
            "type": "object",
            "properties": {
                "source": {"type": "string"},
                "binaries": {"type": "array", "items": _ref("SourceBinary")},
            },
            "required": ["source", "binaries"],
        },
    }


# --- responses ------------------------------------------------------------------------------

_REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The request's id: the `X-Request-Id` sent, or a new random one.",
        "schema": {"type": "string"},
    }
}

_ERRORS: dict[str, tuple[str, str]] = {
    # status: (component name, description)
    "400": ("BadRequest", "The request is malformed; `detail` says how."),
    "401": ("Unauthorized", "A bearer token is needed (only when `[auth]` tokens are set)."),
    "403": ("Forbidden", "The token lacks the role this route needs."),
    "404": ("NotFound", "No such route, or nothing under this name."),
    "413": ("PayloadTooLarge", "The body or the number of events is over the configured limit."),
    "416": ("RangeNotSatisfiable", "The range starts at or past the end of the blob."),
    "422": ("Unprocessable", "Bad parameters, or events that cannot be decoded."),
    "425": ("AllFiltered", "Every posted event was invalid: nothing was published."),
    "429": ("TooManyRequests", "Too many long-polls are waiting for this plugin key."),
    "503": ("Unavailable", "A backend (event log, blob store) is unavailable; retry later."),
    "507": ("InsufficientStorage", "The data folder is full."),
}


def _error_response(description: str, **headers: Schema) -> Schema:
    return {
        "description": description,
        "headers": {**_REQUEST_ID_HEADER, **headers},
        "content": {"application/json": {"schema": _ref("ErrorBody")}},
    }


def _response_components() -> dict[str, Schema]:
    out = {name: _error_response(description) for name, description in _ERRORS.values()}
    out["RangeNotSatisfiable"]["headers"]["Content-Range"] = {
        "description": "`bytes */<size>`: the size of the blob.",
        "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"},
    }
    return out


def _errors(*codes: int) -> dict[str, Schema]:
    """Refs to the error responses `codes` (`_operation` adds 401 and 403 where a token may be
    needed)."""
    return {
        str(code): {"$ref": f"#/components/responses/{_ERRORS[str(code)][0]}"}
        for code in sorted(codes)
    }


def _json(description: str, schema: Schema) -> Schema:
    return {
        "description": description,
        "headers": _REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": schema}},
    }


def _text(description: str, media_type: str = "text/plain") -> Schema:
    return {
        "description": description,
        "headers": _REQUEST_ID_HEADER,
        "content": {media_type: {"schema": {"type": "string"}}},
    }


# --- parameters -----------------------------------------------------------------------------


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    param: Schema = {"name": name, "in": "query", "description": description, "schema": schema}
    if required:
        param["required"] = True
    if schema.get("type") == "array":
        param["style"] = "form"
        param["explode"] = True  # repeated: `r-source=a&r-source=b`
    return param


def _path(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


_BOOL = {"type": "boolean"}
_GO_BOOL = (
    " Parsed as Go's strconv.ParseBool: 1, t, T, TRUE, true, True and 0, f, F, FALSE, false, "
    "False; anything else is an error."
)
_NAME = {"type": "string", "pattern": NAME_PATTERN.pattern}
_SHA256 = {"type": "string", "pattern": SHA256_PATTERN.pattern}
_MODEL = {"enum": list(MODELS)}
_ACTION = {"enum": list(BINARY_ACTIONS)}


def _parameter_components() -> dict[str, Schema]:
    return {
        "RequestId": {
            "name": "X-Request-Id",
            "in": "header",
            "description": "An id for the request, echoed in the reply and the logs.",
            "schema": {"type": "string"},
        },
        "Source": _path("source", _NAME, "A source name: 1-100 letters, digits, `_` or `-`."),
        "Label": _path("label", _NAME, "A stream label: 1-100 letters, digits, `_` or `-`."),
        "Sha256": _path("sha256", _SHA256, "The blob's sha256: 64 lowercase hex characters."),
    }


def _param_ref(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


_FETCH_QUERY = [
    _query(
        "name",
        {"type": "string", "pattern": PLUGIN_PART_PATTERN},
        "The plugin (consumer) name; part of the plugin key.",
        required=True,
    ),
    _query(
        "version",
        {"type": "string", "anyOf": [{"const": ""}, {"pattern": PLUGIN_PART_PATTERN}]},
        "The plugin version; part of the plugin key (a new version replays history).",
    ),
    _query("deployment_key", {"type": "string"}, "Accepted for compatibility; unused."),
    _query(
        "count",
        {"type": "integer", "default": 1},
        "At most this many events; below 1 is 1, above `dispatch.max_count` is that.",
    ),
    _query(
        "deadline",
        {"type": "number", "minimum": 0},
        "Long-poll budget in seconds (fractions allowed); default "
        "`dispatch.default_deadline_seconds`; 0 and anything above "
        "`dispatch.max_deadline_seconds` mean that maximum.",
    ),
    _query("avro-format", _BOOL, "Refused (422) when true: azuld speaks JSON only." + _GO_BOOL),
    _query("is-task", _BOOL, "Ignored: the path says active or passive." + _GO_BOOL),
    _query("r-expedite", _BOOL, "Take the expedite lane (model binary only)." + _GO_BOOL),
    _query(
        "r-live", _BOOL, "Take the live lane (events from when the key was first seen)." + _GO_BOOL
    ),
    _query("r-historic", _BOOL, "Take the historic lane (from the start)." + _GO_BOOL),
    _query(
        "r-source",
        {"type": "array", "items": {"type": "string", "pattern": "^[^.]+$"}},
        "Only these sources (repeated); part of the plugin key.",
    ),
    _query(
        "r-action",
        {"type": "array", "items": _ACTION},
        "Only these binary actions (repeated); part of the plugin key.",
    ),
    _query(
        "d-action", {"type": "array", "items": _ACTION}, "Drop these binary actions (repeated)."
    ),
    _query(
        "r-content",
        _BOOL,
        "Only sourced and extracted events with a content stream; not with r-action or d-action."
        + _GO_BOOL,
    ),
    _query(
        "r-under-content-size",
        {"type": "integer", "minimum": 0},
        "Drop events whose content is larger than this (0: no limit).",
    ),
    _query(
        "r-over-content-size",
        {"type": "integer", "minimum": 0},
        "Drop events whose content is smaller than this (0: no limit).",
    ),
    _query(
        "r-streams",
        {"type": "array", "items": {"type": "string", "pattern": "^[^,]+(,.*)?$"}},
        "`label,format-prefix,...` (repeated): require a stream with this label (or `*`) whose "
        "file_format starts with one of the prefixes.",
    ),
    _query("d-self", _BOOL, "Drop events authored by this plugin." + _GO_BOOL),
    _query("max-security", {"type": "string"}, "Accepted; not enforced yet."),
    _query("reset", _BOOL, "Forget this key's progress first (admin role)." + _GO_BOOL),
    _query("debug", _BOOL, "A separate plugin key (flag `D`) for debugging." + _GO_BOOL),
]

_FETCH_REPLY = {
    "description": (
        "Up to `count` events, after waiting at most `deadline`. During a backend outage the "
        "reply is still 200, with `info.ready` false."
    ),
    "headers": _REQUEST_ID_HEADER,
    "content": {
        "multipart/form-data": {
            "schema": _ref("FetchReply"),
            "encoding": {
                "info": {"contentType": "application/octet-stream"},
                "events": {"contentType": "application/octet-stream"},
            },
        }
    },
}

_POST_EVENTS_BODY = {
    "required": True,
    "description": "One event, or a JSON array of events, of the model named by `model`.",
    "content": {"application/json": {"schema": _ref("EventOrEvents")}},
}

_POST_EVENTS_RESPONSES = {
    "200": _json(
        "Stored: every valid event is durable in the log. Invalid ones are in `failures`.",
        _ref("PostResponse"),
    ),
    **_errors(400, 413, 422, 425, 503, 507),
}

_UPLOAD_BODY = {
    "required": True,
    "description": "The blob, raw (any Content-Type); streamed to disk while it is hashed.",
    "content": {"application/octet-stream": {"schema": {}}},
}

_UPLOAD_RESPONSES = {
    "200": _json(
        "Stored under `<source>/<label>/<sha256>`: its hashes and file type (`label` is always "
        "`content`, whatever the URL label).",
        _ref("DataResponse"),
    ),
    **_errors(400, 413, 503, 507),
}


def _operation(
    operation_id: str,
    summary: str,
    tags: list[str],
    responses: dict[str, Schema],
    *,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    public: bool = False,
    description: str = "",
) -> Schema:
    op: Schema = {"operationId": operation_id, "summary": summary, "tags": tags}
    if description:
        op["description"] = description
    op["parameters"] = [*(parameters or []), _param_ref("RequestId")]
    if body is not None:
        op["requestBody"] = body
    if public:
        op["responses"] = responses
        op["security"] = []
    else:
        op["responses"] = dict(sorted({**responses, **_errors(401, 403)}.items()))
    return op


def _paths() -> dict[str, Schema]:
    stream_params = [_param_ref("Source"), _param_ref("Label"), _param_ref("Sha256")]
    range_header = {
        "name": "Range",
        "in": "header",
        "description": "One range: `bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix>`.",
        "schema": {"type": "string", "pattern": "^bytes=([0-9]+-[0-9]*|-[0-9]+)$"},
    }
    octets: Schema = {"application/octet-stream": {"schema": {}}}
    return {
        "/api/v2/event": {
            "post": _operation(
                "postEvents",
                "Publish events",
                ["events"],
                _POST_EVENTS_RESPONSES,
                parameters=[
                    _query("model", _MODEL, "The model of the posted events.", required=True),
                    _query(
                        "include_ok",
                        _BOOL,
                        "Return the stored events in `ok` (only `true` and `1` count as true).",
                    ),
                ],
                body=_POST_EVENTS_BODY,
                description=(
                    "Registrations (`plugin`), heartbeats and results (`status`), sourced "
                    "binaries (`binary`) and the other models. Roles: plugin for status and "
                    "plugin; ingest or plugin for binary and download; ingest for the others."
                ),
            )
        },
        "/api/v2/event/{model}/{mode}": {
            "get": _operation(
                "fetchEvents",
                "Fetch events: jobs (active) or a feed (passive)",
                ["events"],
                {"200": _FETCH_REPLY, **_errors(404, 422, 429, 503)},
                parameters=[
                    _path("model", _MODEL, "The model to fetch."),
                    _path(
                        "mode",
                        {"enum": ["active", "passive"]},
                        "`active`: binary events carry `dequeued` and are leased; `passive`: "
                        "no leases.",
                    ),
                    *_FETCH_QUERY,
                ],
            )
        },
        "/api/v3/stream/{source}/{label}": {
            "post": _operation(
                "uploadStream",
                "Upload a blob",
                ["streams"],
                _UPLOAD_RESPONSES,
                parameters=[
                    _param_ref("Source"),
                    _param_ref("Label"),
                    _query(
                        "skip-identify",
                        _BOOL,
                        "Only hash sha256 (needs `expected-sha256`)." + _GO_BOOL,
                    ),
                    _query("expected-sha256", _SHA256, "400 unless the body has this sha256."),
                ],
                body=_UPLOAD_BODY,
            )
        },
        "/api/v3/stream/{source}/{label}/{sha256}": {
            "get": _operation(
                "downloadStream",
                "Download a blob, whole or one range",
                ["streams"],
                {
                    "200": {
                        "description": "The whole blob.",
                        "headers": {
                            **_REQUEST_ID_HEADER,
                            "Accept-Ranges": {"schema": {"const": "bytes"}},
                            "Content-Length": {"schema": {"type": "integer", "minimum": 0}},
                        },
                        "content": octets,
                    },
                    "206": {
                        "description": "The requested range.",
                        "headers": {
                            **_REQUEST_ID_HEADER,
                            "Accept-Ranges": {"schema": {"const": "bytes"}},
                            "Content-Length": {"schema": {"type": "integer", "minimum": 1}},
                            "Content-Range": {
                                "required": True,
                                "schema": {
                                    "type": "string",
                                    "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$",
                                },
                            },
                        },
                        "content": octets,
                    },
                    **_errors(400, 404, 416, 503),
                },
                parameters=[*stream_params, range_header],
            ),
            "head": _operation(
                "hasStream",
                "Whether a blob exists",
                ["streams"],
                {
                    "200": {
                        "description": "It exists (empty body).",
                        "headers": _REQUEST_ID_HEADER,
                    },
                    "404": {
                        "description": "It does not (empty body).",
                        "headers": _REQUEST_ID_HEADER,
                    },
                    **_errors(400, 503),
                },
                parameters=stream_params,
            ),
        },
        # The seed document's names: aliases of the routes above (docs/protocol.md).
        "/api/v1/events/plugin": {
            "post": _operation(
                "seedRegisterPlugin",
                "Register a plugin (= POST /api/v2/event?model=plugin)",
                ["seed aliases"],
                _POST_EVENTS_RESPONSES,
                body=_POST_EVENTS_BODY,
            )
        },
        "/api/v1/processing/{entity_type}": {
            "get": _operation(
                "seedGetJob",
                "Get jobs (= GET /api/v2/event/{entity_type}/active)",
                ["seed aliases"],
                {"200": _FETCH_REPLY, **_errors(404, 422, 429, 503)},
                parameters=[
                    _path("entity_type", _MODEL, "The model to fetch."),
                    *_FETCH_QUERY,
                ],
            ),
            "post": _operation(
                "seedPostStatus",
                "Post heartbeats and results (= POST /api/v2/event?model=status)",
                ["seed aliases"],
                _POST_EVENTS_RESPONSES,
                parameters=[
                    _path("entity_type", {"type": "string"}, "The jobs' model (not checked)."),
                ],
                body=_POST_EVENTS_BODY,
            ),
        },
        "/api/v1/data/{sha256}": {
            "post": _operation(
                "seedUpload",
                "Upload a blob (= POST /api/v3/stream/{source}/{label}?expected-sha256={sha256})",
                ["seed aliases"],
                _UPLOAD_RESPONSES,
                parameters=[
                    _path("sha256", _SHA256, "The blob's sha256 (400 unless the body has it)."),
                    _query("source", {**_NAME, "default": "default"}, "The source name."),
                    _query("label", {**_NAME, "default": "content"}, "The stream label."),
                    _query("skip-identify", _BOOL, "Only hash sha256." + _GO_BOOL),
                ],
                body=_UPLOAD_BODY,
            )
        },
        "/": {
            "get": _operation(
                "root",
                "Liveness, as Go answers it: `Azul Dispatcher`",
                ["operations"],
                {"200": _text("`Azul Dispatcher`")},
                public=True,
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "Liveness",
                ["operations"],
                {"200": _json("The process answers.", _ref("Health"))},
                public=True,
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness: the event log and the blob store are usable",
                ["operations"],
                {
                    "200": _json("Ready.", _ref("Readiness")),
                    "503": _json("Not ready; `reasons` say why.", _ref("Readiness")),
                },
                public=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics (text exposition format)",
                ["operations"],
                {"200": _text("The metrics.")},
                public=True,
            )
        },
        "/api/azuld/v1/plugins": {
            "get": _operation(
                "plugins",
                "Plugin keys on this instance: lanes, lag, in flight, done, failures",
                ["introspection"],
                {"200": _json("The plugin keys.", _ref("Plugins")), **_errors(503)},
            )
        },
        "/api/azuld/v1/sources/{source}": {
            "get": _operation(
                "sourceTree",
                "A source's binaries as a tree, with the features plugins found",
                ["introspection"],
                {"200": _json("The tree.", _ref("SourceTree")), **_errors(400, 503)},
                parameters=[_param_ref("Source")],
            )
        },
        "/api/azuld/v1/failed": {
            "get": _operation(
                "failedJobs",
                "Dead letters: jobs that ended in an error status, newest first",
                ["introspection"],
                {"200": _json("The failed jobs.", _ref("FailedJobs")), **_errors(400, 503)},
                parameters=[
                    _query("plugin", {"type": "string"}, "Only this plugin's (by name)."),
                    _query("limit", {"type": "integer", "default": 200}, "At most this many."),
                ],
            )
        },
        "/api/azuld/v1/reoffer": {
            "post": _operation(
                "reoffer",
                "Put jobs back in front of their plugin key (recorded in `system.reoffer`)",
                ["introspection"],
                {
                    "200": _json("What became of each job id.", _ref("Reoffered")),
                    **_errors(400, 413, 503),
                },
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("ReoffersRequest")}},
                },
            )
        },
        "/api/azuld/v1/reoffers": {
            "get": _operation(
                "reoffers",
                "The audit trail of re-offered jobs, newest first",
                ["introspection"],
                {"200": _json("The re-offers.", _ref("Reoffers")), **_errors(503)},
            )
        },
        "/ui": {
            "get": _operation(
                "dashboard",
                "The dashboard (one self-contained HTML page)",
                ["introspection"],
                {"200": _text("The page.", "text/html")},
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                ["introspection"],
                {"200": _json("OpenAPI 3.1.", {"type": "object"})},
            )
        },
    }


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "azuld",
            "version": __version__,
            "summary": "The Azul dispatcher HTTP API (azul-dispatcher wire protocol, model v6)",
            "description": (
                "Errors are always JSON `ErrorBody`. With no `[auth]` tokens configured every "
                "request is allowed; with tokens, non-public routes need `Authorization: Bearer "
                "<token>` with a role the route accepts (or a caller in `auth.open_networks`)."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "events", "description": "Publish and fetch events."},
            {"name": "streams", "description": "Blobs by source, label and sha256."},
            {"name": "operations", "description": "Liveness, readiness, metrics (public)."},
            {"name": "introspection", "description": "For people and dashboards (admin role)."},
            {"name": "seed aliases", "description": "The seed document's route names."},
        ],
        "security": [{}, {"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": {**_struct_schemas(), **_extra_schemas()},
            "responses": _response_components(),
            "parameters": _parameter_components(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `[auth]` (optional: only when tokens are set).",
                }
            },
        },
    }


OPENAPI: dict[str, Any] = _document()
_ENCODED = msgspec.json.encode(OPENAPI)


@blueprint.get("/openapi.json")
async def openapi_json() -> Response:
    return Response(_ENCODED, content_type="application/json")
