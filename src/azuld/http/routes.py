"""Every route azuld serves, each described once, in `ROUTES`.

A `Route` is a method and a werkzeug rule; who may call it (`access`); who answers it: `hot`, a
handler on the raw-ASGI path in front of Quart (`azuld.http.hot`), for the protocol's busy routes,
or `quart`, a view Quart serves; and its OpenAPI description (`doc`). Everything else is made from
this table: the hot router, Quart's URL map (`azuld.http.app`), the authorization
(`azuld.http.steps.authorize` with the matched route's access) and `/openapi.json`
(`azuld.http.openapi`).

A `GET` route also answers `HEAD` (as werkzeug does); a `HEAD` route is listed only where its
answer means more than the `GET`'s headers. A request that matches no route (404, 405, a
redirect) needs the `admin` role when tokens are set (`NO_ROUTE`).
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart import Response

from azuld.http import events, ops, streams
from azuld.http.admin_routes import ADMIN_ROUTES
from azuld.http.auth import ADMIN_ONLY, INGEST, PLUGIN, PUBLIC, allow
from azuld.http.openapi import (
    ACTION,
    BOOL,
    GO_BOOL,
    MODEL,
    NAME,
    SHA256,
    Doc,
    Schema,
    bare_reply,
    document,
    json_body,
    json_reply,
    param_ref,
    path,
    query,
    ref,
    text_reply,
)
from azuld.http.route import QuartView, Route
from azuld.http.steps import Services
from azuld.models.responses import DataResponse, PostResponse

__all__ = [
    "NO_ROUTE",
    "OPENAPI",
    "PLUGIN_PART_PATTERN",
    "ROUTES",
    "QuartView",
    "Route",
]

NO_ROUTE = ADMIN_ONLY


# --- the pieces several routes share --------------------------------------------------------

# `azuld.core.keys._PLUGIN_PART`: plugin names and versions.
PLUGIN_PART_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,99}$"

_STREAM = "/api/v3/stream/<source>/<label>/<sha256>"
_BLOBS = allow(PLUGIN, INGEST)

_PUBLISH = allow(
    INGEST,
    by_model={
        "status": (PLUGIN,),
        "plugin": (PLUGIN,),
        "binary": (INGEST, PLUGIN),
        "download": (INGEST, PLUGIN),
    },
)
_POST_EVENTS_BODY = json_body(
    ref("EventOrEvents"),
    "One event, or a JSON array of events, of the model named by `model`; with "
    "`avro-format=true`, one raw Avro datum of the model's `Bulk<Model>Event` record "
    "(azul-bedrock's v6 schemas; models binary, status and plugin). The Content-Type is "
    "ignored, as in Go.",
)
_POST_EVENTS_BODY["content"] = {
    **_POST_EVENTS_BODY["content"],
    "application/avro": {
        "schema": {
            "type": "string",
            "contentMediaType": "application/avro",
            "description": "`Bulk<Model>Event{model_version: long, events: array}`, no header.",
        }
    },
}
_POST_EVENTS_REPLIES = {
    "200": json_reply(
        "Stored: every valid event is durable in the log. Invalid ones are in `failures`.",
        PostResponse,
    )
}
_POST_EVENTS_ERRORS = (400, 408, 413, 422, 425, 503, 507)
_POST_QUERY = (
    query(
        "avro-format",
        BOOL,
        "The body is an Avro bulk record when `true` or `1` (other values are false, as Go "
        "compares POST flags); 422 for models without Avro schemas (delete, download, insert, "
        "retrohunt). The reply is JSON either way.",
    ),
)

_FETCH = allow(PLUGIN, reset_needs_admin=True)
_FETCH_QUERY = (
    query(
        "name",
        {"type": "string", "pattern": PLUGIN_PART_PATTERN},
        "The plugin (consumer) name; part of the plugin key.",
        required=True,
    ),
    query(
        "version",
        {"type": "string", "anyOf": [{"const": ""}, {"pattern": PLUGIN_PART_PATTERN}]},
        "The plugin version; part of the plugin key (a new version replays history).",
    ),
    query("deployment_key", {"type": "string"}, "Accepted for compatibility; unused."),
    query(
        "count",
        {"type": "integer", "default": 1},
        "At most this many events; below 1 is 1, above `dispatch.max_count` is that.",
    ),
    query(
        "deadline",
        {"type": "number", "minimum": 0},
        "Long-poll budget in seconds (fractions allowed); default "
        "`dispatch.default_deadline_seconds`; 0 and anything above "
        "`dispatch.max_deadline_seconds` mean that maximum.",
    ),
    query(
        "avro-format",
        BOOL,
        "The `events` part is the Avro `Bulk<Model>Event` record (same parts and names); 422 "
        "for models without Avro schemas; not part of the plugin key." + GO_BOOL,
    ),
    query("is-task", BOOL, "Ignored: the path says active or passive." + GO_BOOL),
    query("r-expedite", BOOL, "Take the expedite lane (model binary only)." + GO_BOOL),
    query(
        "r-live", BOOL, "Take the live lane (events from when the key was first seen)." + GO_BOOL
    ),
    query("r-historic", BOOL, "Take the historic lane (from the start)." + GO_BOOL),
    query(
        "r-source",
        {"type": "array", "items": {"type": "string", "pattern": "^[^.]+$"}},
        "Only these sources (repeated); part of the plugin key.",
    ),
    query(
        "r-action",
        {"type": "array", "items": ACTION},
        "Only these binary actions (repeated); part of the plugin key.",
    ),
    query("d-action", {"type": "array", "items": ACTION}, "Drop these binary actions (repeated)."),
    query(
        "r-content",
        BOOL,
        "Only sourced and extracted events with a content stream; not with r-action or d-action."
        + GO_BOOL,
    ),
    query(
        "r-under-content-size",
        {"type": "integer", "minimum": 0},
        "Drop events whose content is larger than this (0: no limit).",
    ),
    query(
        "r-over-content-size",
        {"type": "integer", "minimum": 0},
        "Drop events whose content is smaller than this (0: no limit).",
    ),
    query(
        "r-streams",
        {"type": "array", "items": {"type": "string", "pattern": "^[^,]+(,.*)?$"}},
        "`label,format-prefix,...` (repeated): require a stream with this label (or `*`) whose "
        "file_format starts with one of the prefixes.",
    ),
    query("d-self", BOOL, "Drop events authored by this plugin." + GO_BOOL),
    query(
        "max-security",
        {"type": "string"},
        "The plugin's clearance, a security label such as `OFFICIAL` or `SECRET REL:AUS`: an "
        "event whose labels (`source.security`, `author.security`, each path author's) it may "
        "not see, or that cannot be decided, is never handed out; it is counted as filtered "
        "(`FilterSecurity-max_security`). A clearance the label model cannot read is a 422. "
        "Not part of the plugin key.",
    ),
    query("reset", BOOL, "Forget this key's progress first (admin role)." + GO_BOOL),
    query("debug", BOOL, "A separate plugin key (flag `D`) for debugging." + GO_BOOL),
    query(
        "ephemeral",
        BOOL,
        "azuld's watchers (passive only, 422 on active): a plugin key of its own (flag `W`) "
        "that is never registered, stores no commits, reads every partition, and is forgotten "
        "once no poll has come for it for `dispatch.ephemeral_idle_seconds`." + GO_BOOL,
    ),
    query(
        "since",
        {"type": "number", "minimum": 0},
        "With `ephemeral`: start the live lanes at the first record appended at or after this "
        "time (Unix seconds; the embedded log may start up to a minute earlier). Read when the "
        "key is created.",
    ),
    query(
        "last",
        {"type": "integer", "minimum": 0},
        "With `ephemeral`, instead of `since`: start the live lanes this many records back on "
        "each partition. Read when the key is created.",
    ),
)
_FETCH_REPLIES: dict[str, Schema] = {
    "200": {
        **bare_reply(
            "Up to `count` events, after waiting at most `deadline`. During a backend outage the "
            "reply is still 200, with `info.ready` false. With `avro-format`, the `events` part "
            "holds Avro bytes instead of the JSON object the schema describes."
        ),
        "content": {
            "multipart/form-data": {
                "schema": ref("FetchReply"),
                "encoding": {
                    "info": {"contentType": "application/octet-stream"},
                    "events": {"contentType": "application/octet-stream"},
                },
            }
        },
    }
}
_FETCH_ERRORS = (404, 422, 429, 503)

_UPLOAD_BODY = {
    "required": True,
    "description": "The blob, raw (any Content-Type), with a Content-Length or chunked, up to "
    "`server.max_upload_bytes`; hashed as it arrives.",
    "content": {"application/octet-stream": {"schema": {}}},
}
_UPLOAD_REPLIES = {
    "200": json_reply(
        "Stored under `<source>/<label>/<sha256>`: its hashes and file type (`label` is always "
        "`content`, whatever the URL label).",
        DataResponse,
    )
}
_UPLOAD_ERRORS = (400, 408, 413, 503, 507)
_OCTETS: Schema = {"application/octet-stream": {"schema": {}}}
_ACCEPT_RANGES = {"Accept-Ranges": {"schema": {"const": "bytes"}}}
_RANGE_HEADER = {
    "name": "Range",
    "in": "header",
    "description": "One range: `bytes=<first>-<last>`, `bytes=<first>-` or `bytes=-<suffix>`.",
    "schema": {"type": "string", "pattern": "^bytes=([0-9]+-[0-9]*|-[0-9]+)$"},
}
_STREAM_PARAMS = (param_ref("Source"), param_ref("Label"), param_ref("Sha256"))


async def _openapi_json(svc: Services) -> Response:
    return Response(_OPENAPI_JSON, content_type="application/json")


# --- the table ------------------------------------------------------------------------------

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/v2/event",
        _PUBLISH,
        Doc(
            "postEvents",
            "Publish events",
            "events",
            _POST_EVENTS_REPLIES,
            _POST_EVENTS_ERRORS,
            parameters=(
                query("model", MODEL, "The model of the posted events.", required=True),
                query(
                    "include_ok",
                    BOOL,
                    "Return the stored events in `ok` (only `true` and `1` count as true).",
                ),
                *_POST_QUERY,
            ),
            body=_POST_EVENTS_BODY,
            description=(
                "Registrations (`plugin`), heartbeats and results (`status`), sourced binaries "
                "(`binary`) and the other models."
            ),
        ),
        hot=events.post_events,
    ),
    Route(
        "GET",
        "/api/v2/event/<model>/<mode>",
        _FETCH,
        Doc(
            "fetchEvents",
            "Fetch events: jobs (active) or a feed (passive)",
            "events",
            _FETCH_REPLIES,
            _FETCH_ERRORS,
            parameters=(
                path("model", MODEL, "The model to fetch."),
                path(
                    "mode",
                    {"enum": ["active", "passive"]},
                    "`active`: binary events carry `dequeued` and are leased; `passive`: "
                    "no leases.",
                ),
                *_FETCH_QUERY,
            ),
        ),
        hot=events.fetch_events,
    ),
    Route(
        "POST",
        "/api/v3/stream/<source>/<label>",
        _BLOBS,
        Doc(
            "uploadStream",
            "Upload a blob",
            "streams",
            _UPLOAD_REPLIES,
            _UPLOAD_ERRORS,
            parameters=(
                param_ref("Source"),
                param_ref("Label"),
                query(
                    "skip-identify",
                    BOOL,
                    "Only hash sha256 (needs `expected-sha256`)." + GO_BOOL,
                ),
                query("expected-sha256", SHA256, "400 unless the body has this sha256."),
            ),
            body=_UPLOAD_BODY,
        ),
        hot=streams.upload,
    ),
    Route(
        "GET",
        _STREAM,
        _BLOBS,
        Doc(
            "downloadStream",
            "Download a blob, whole or one range",
            "streams",
            {
                "200": {
                    **bare_reply(
                        "The whole blob.",
                        {
                            **_ACCEPT_RANGES,
                            "Content-Length": {"schema": {"type": "integer", "minimum": 0}},
                        },
                    ),
                    "content": _OCTETS,
                },
                "206": {
                    **bare_reply(
                        "The requested range.",
                        {
                            **_ACCEPT_RANGES,
                            "Content-Length": {"schema": {"type": "integer", "minimum": 1}},
                            "Content-Range": {
                                "required": True,
                                "schema": {
                                    "type": "string",
                                    "pattern": "^bytes [0-9]+-[0-9]+/[0-9]+$",
                                },
                            },
                        },
                    ),
                    "content": _OCTETS,
                },
            },
            (400, 404, 416, 503),
            parameters=(*_STREAM_PARAMS, _RANGE_HEADER),
        ),
        hot=streams.download,
    ),
    Route(
        "HEAD",
        _STREAM,
        _BLOBS,
        Doc(
            "hasStream",
            "Whether a blob exists",
            "streams",
            {
                "200": bare_reply("It exists (empty body)."),
                "404": bare_reply("It does not (empty body)."),
            },
            (400, 503),
            parameters=_STREAM_PARAMS,
        ),
        hot=streams.download,
    ),
    # The seed document's names: aliases of the routes above (docs/protocol.md).
    Route(
        "POST",
        "/api/v1/events/plugin",
        allow(PLUGIN),
        Doc(
            "seedRegisterPlugin",
            "Register a plugin (= POST /api/v2/event?model=plugin)",
            "seed aliases",
            _POST_EVENTS_REPLIES,
            _POST_EVENTS_ERRORS,
            parameters=_POST_QUERY,
            body=_POST_EVENTS_BODY,
        ),
        hot=events.v1_register,
    ),
    Route(
        "GET",
        "/api/v1/processing/<entity_type>",
        _FETCH,
        Doc(
            "seedGetJob",
            "Get jobs (= GET /api/v2/event/{entity_type}/active)",
            "seed aliases",
            _FETCH_REPLIES,
            _FETCH_ERRORS,
            parameters=(path("entity_type", MODEL, "The model to fetch."), *_FETCH_QUERY),
        ),
        hot=events.v1_get_job,
    ),
    Route(
        "POST",
        "/api/v1/processing/<entity_type>",
        allow(PLUGIN),
        Doc(
            "seedPostStatus",
            "Post heartbeats and results (= POST /api/v2/event?model=status)",
            "seed aliases",
            _POST_EVENTS_REPLIES,
            _POST_EVENTS_ERRORS,
            parameters=(
                path("entity_type", {"type": "string"}, "The jobs' model (not checked)."),
                *_POST_QUERY,
            ),
            body=_POST_EVENTS_BODY,
        ),
        hot=events.v1_post_status,
    ),
    Route(
        "POST",
        "/api/v1/data/<sha256>",
        _BLOBS,
        Doc(
            "seedUpload",
            "Upload a blob (= POST /api/v3/stream/{source}/{label}?expected-sha256={sha256})",
            "seed aliases",
            _UPLOAD_REPLIES,
            _UPLOAD_ERRORS,
            parameters=(
                path("sha256", SHA256, "The blob's sha256 (400 unless the body has it)."),
                query("source", {**NAME, "default": "default"}, "The source name."),
                query("label", {**NAME, "default": "content"}, "The stream label."),
                query("skip-identify", BOOL, "Only hash sha256." + GO_BOOL),
            ),
            body=_UPLOAD_BODY,
        ),
        hot=streams.v1_upload,
    ),
    Route(
        "GET",
        "/",
        PUBLIC,
        Doc(
            "root",
            "Liveness, as Go answers it: `Azul Dispatcher`",
            "operations",
            {"200": text_reply("`Azul Dispatcher`")},
        ),
        quart=ops.root,
    ),
    Route(
        "GET",
        "/healthz",
        PUBLIC,
        Doc(
            "healthz",
            "Liveness",
            "operations",
            {"200": json_reply("The process answers.", ops.Health)},
        ),
        quart=ops.healthz,
    ),
    Route(
        "GET",
        "/readyz",
        PUBLIC,
        Doc(
            "readyz",
            "Readiness: the event log and the blob store are usable",
            "operations",
            {
                "200": json_reply("Ready.", ops.Readiness),
                "503": json_reply("Not ready; `reasons` say why.", ops.Readiness),
            },
        ),
        quart=ops.readyz,
    ),
    Route(
        "GET",
        "/metrics",
        PUBLIC,
        Doc(
            "metrics",
            "Prometheus metrics (text exposition format)",
            "operations",
            {"200": text_reply("The metrics.")},
            (503,),
        ),
        quart=ops.metrics,
    ),
    *ADMIN_ROUTES,
    Route(
        "GET",
        "/openapi.json",
        PUBLIC,
        Doc(
            "openapi",
            "This document",
            "operations",
            {"200": json_reply("OpenAPI 3.1.", {"type": "object"})},
        ),
        quart=_openapi_json,
    ),
)

OPENAPI: dict[str, Any] = document(ROUTES)
_OPENAPI_JSON = msgspec.json.encode(OPENAPI)
