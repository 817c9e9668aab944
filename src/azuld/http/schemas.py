"""Schemas of the replies that are not msgspec Structs (yet): the parts of a fetch reply, a posted
body of one event or many, and the admin and introspection views, which the dispatcher builds as
dicts. `azuld.http.openapi` puts them beside the components it generates from the Structs; a Struct
class inside them stands for its component. When a view becomes a Struct, its entry here goes and
the route table names the Struct instead.
"""

from __future__ import annotations

from typing import Any

from azuld.core.delivery import Lane
from azuld.models.events import MODELS, BinaryEvent, GenericEvent, PluginEvent, StatusEvent
from azuld.models.responses import FetchInfo

__all__ = ["SCHEMAS"]


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


SCHEMAS: dict[str, dict[str, Any]] = {
    "Event": {
        "title": "Event",
        "description": "An event of any model; `?model=` / the path says which.",
        "anyOf": [BinaryEvent, StatusEvent, PluginEvent, GenericEvent],
    },
    "EventOrEvents": {
        "title": "EventOrEvents",
        "description": (
            "A JSON array of events (the `[` must be the first byte) or one event object."
        ),
        "anyOf": [{"type": "array", "items": ref("Event")}, ref("Event")],
    },
    "FetchEvents": {
        "title": "FetchEvents",
        "description": "The `events` part of a fetch reply.",
        "type": "object",
        "properties": {"events": {"type": "array", "items": ref("Event")}},
        "required": ["events"],
    },
    "FetchReply": {
        "title": "FetchReply",
        "description": (
            "The two parts of a fetch reply, in this order: `info` (filename `info.json`) "
            "and `events` (filename `events.json`), each JSON with the part Content-Type "
            "`application/octet-stream`; with `avro-format`, the `events` part is the Avro "
            "`Bulk<Model>Event` record instead (same name and type, as the Go dispatcher "
            "sends it)."
        ),
        "type": "object",
        "properties": {"info": FetchInfo, "events": ref("FetchEvents")},
        "required": ["info", "events"],
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
            "ephemeral": {
                "type": "boolean",
                "description": "A watcher's feed (`ephemeral=true`), forgotten soon after its "
                "last poll.",
            },
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
            "multiplugins": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": (
                    "Final statuses of a runner plugin's multiplugins, per `<author>: <status>` "
                    "(they carry results; the plugin's own status ends the job)."
                ),
            },
            "errors_last_hour": {"type": "integer", "minimum": 0},
            "replayed": {
                "type": "integer",
                "minimum": 0,
                "description": "Jobs answered from the replay cache.",
            },
            "replay_saved_seconds": {
                "type": "number",
                "minimum": 0,
                "description": "Plugin run time the replay cache saved.",
            },
            "last_seen": {"type": "number", "description": "Unix time of the last fetch."},
            "recent_failures": {"type": "array", "items": ref("PluginFailure")},
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
            "replayed",
            "replay_saved_seconds",
            "last_seen",
            "recent_failures",
            "history",
        ],
    },
    "Plugins": {
        "title": "Plugins",
        "type": "object",
        "properties": {"plugins": {"type": "array", "items": ref("PluginKeySummary")}},
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
            "children": {"type": "array", "items": ref("SourceBinary")},
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
        "properties": {"failed": {"type": "array", "items": ref("FailedJob")}},
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
        "properties": {"reoffered": {"type": "array", "items": ref("ReofferOutcome")}},
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
        "properties": {"reoffers": {"type": "array", "items": ref("ReofferRecord")}},
        "required": ["reoffers"],
    },
    "SourceTree": {
        "title": "SourceTree",
        "type": "object",
        "properties": {
            "source": {"type": "string"},
            "binaries": {"type": "array", "items": ref("SourceBinary")},
        },
        "required": ["source", "binaries"],
    },
}
