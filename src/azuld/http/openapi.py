"""The OpenAPI 3.1 document of azuld's routes, made from the route table (`azuld.http.routes`).

Each route's `Doc` gives its summary, parameters, body and replies; `document` adds what every
operation shares: the request id, the error replies, 401 and 403 where a token may be needed and
the roles, both from the route's `Access`. Schemas are JSON Schema dicts in which a msgspec Struct
class stands for its component: `document` replaces each class by a `$ref` and generates the
components from the classes (`msgspec.json.schema_components`), so the document cannot drift from
what the handlers encode. Replies that are not Structs yet are written out in
`azuld.http.schemas`. `tests/http/test_openapi.py` fuzzes the live daemon against the document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from azuld import __version__
from azuld.core.keys import NAME_PATTERN
from azuld.core.validation import SHA256_PATTERN
from azuld.http.auth import ADMIN, Access
from azuld.http.schemas import SCHEMAS
from azuld.models.events import BINARY_ACTIONS, MODELS, GenericEvent
from azuld.models.responses import ErrorBody

__all__ = [
    "ACTION",
    "BOOL",
    "GO_BOOL",
    "MODEL",
    "NAME",
    "SHA256",
    "Doc",
    "Schema",
    "document",
    "json_body",
    "json_reply",
    "param_ref",
    "path",
    "query",
    "ref",
    "text_reply",
]

Schema = dict[str, Any]

_REF = "#/components/schemas/{name}"

TAGS = (
    ("events", "Publish and fetch events."),
    ("streams", "Blobs by source, label and sha256."),
    ("operations", "Liveness, readiness, metrics and this document (public)."),
    ("introspection", "For people and dashboards (admin role)."),
    ("seed aliases", "The seed document's route names."),
)


@dataclass(frozen=True, slots=True)
class Doc:
    """How the document describes one route. `replies` are its own replies by status code;
    `errors` the status codes of the `ErrorBody` replies it may give (401 and 403 are added where
    its access needs a token). Schemas may hold msgspec Struct classes (see the module doc)."""

    operation_id: str
    summary: str
    tag: str
    replies: Mapping[str, Schema]
    errors: tuple[int, ...] = ()
    parameters: tuple[Schema, ...] = ()
    body: Schema | None = None
    description: str = ""


class Described(Protocol):
    """A route as `document` reads it (`azuld.http.routes.Route`)."""

    @property
    def method(self) -> str: ...

    @property
    def rule(self) -> str: ...

    @property
    def access(self) -> Access: ...

    @property
    def doc(self) -> Doc: ...


# --- building blocks for the route table ----------------------------------------------------


def ref(name: str) -> Schema:
    """A `$ref` to a component schema written out in `azuld.http.schemas`."""
    return {"$ref": _REF.format(name=name)}


def param_ref(name: str) -> Schema:
    """A `$ref` to a shared parameter: `RequestId`, `Source`, `Label` or `Sha256`."""
    return {"$ref": f"#/components/parameters/{name}"}


def query(name: str, schema: Any, description: str, *, required: bool = False) -> Schema:
    param: Schema = {"name": name, "in": "query", "description": description, "schema": schema}
    if required:
        param["required"] = True
    if isinstance(schema, dict) and schema.get("type") == "array":
        param["style"] = "form"
        param["explode"] = True  # repeated: `r-source=a&r-source=b`
    return param


def path(name: str, schema: Any, description: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


_REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The request's id: the `X-Request-Id` sent, or a new random one.",
        "schema": {"type": "string"},
    }
}


def json_reply(description: str, schema: Any) -> Schema:
    return {
        "description": description,
        "headers": _REQUEST_ID_HEADER,
        "content": {"application/json": {"schema": schema}},
    }


def text_reply(description: str, media_type: str = "text/plain") -> Schema:
    return {
        "description": description,
        "headers": _REQUEST_ID_HEADER,
        "content": {media_type: {"schema": {"type": "string"}}},
    }


def bare_reply(description: str, headers: Mapping[str, Schema] | None = None) -> Schema:
    """A reply with no body, or one whose `content` the caller adds."""
    return {"description": description, "headers": {**_REQUEST_ID_HEADER, **(headers or {})}}


def json_body(schema: Any, description: str = "") -> Schema:
    body: Schema = {"required": True}
    if description:
        body["description"] = description
    body["content"] = {"application/json": {"schema": schema}}
    return body


BOOL = {"type": "boolean"}
GO_BOOL = (
    " Parsed as Go's strconv.ParseBool: 1, t, T, TRUE, true, True and 0, f, F, FALSE, false, "
    "False; anything else is an error."
)
NAME = {"type": "string", "pattern": NAME_PATTERN.pattern}
SHA256 = {"type": "string", "pattern": SHA256_PATTERN.pattern}
MODEL = {"enum": list(MODELS)}
ACTION = {"enum": list(BINARY_ACTIONS)}

_PARAMETERS = {
    "RequestId": {
        "name": "X-Request-Id",
        "in": "header",
        "description": "An id for the request, echoed in the reply and the logs.",
        "schema": {"type": "string"},
    },
    "Source": path("source", NAME, "A source name: 1-100 letters, digits, `_` or `-`."),
    "Label": path("label", NAME, "A stream label: 1-100 letters, digits, `_` or `-`."),
    "Sha256": path("sha256", SHA256, "The blob's sha256: 64 lowercase hex characters."),
}

_ERRORS: dict[int, tuple[str, str]] = {
    # status: (component name, description)
    400: ("BadRequest", "The request is malformed; `detail` says how."),
    401: ("Unauthorized", "A bearer token is needed (only when `[auth]` tokens are set)."),
    403: ("Forbidden", "The token lacks the role this route needs."),
    404: ("NotFound", "No such route, or nothing under this name."),
    408: ("RequestTimeout", "The request body did not all arrive within the body timeout."),
    413: ("PayloadTooLarge", "The body or the number of events is over the configured limit."),
    416: ("RangeNotSatisfiable", "The range starts at or past the end of the blob."),
    422: ("Unprocessable", "Bad parameters, or events that cannot be decoded."),
    425: ("AllFiltered", "Every posted event was invalid: nothing was published."),
    429: ("TooManyRequests", "Too many long-polls are waiting for this plugin key."),
    503: ("Unavailable", "A backend (event log, blob store) is unavailable; retry later."),
    507: ("InsufficientStorage", "The data folder is full."),
}

# What the wire structs' own docstrings do not say.
_STRUCT_NOTES: dict[str, Schema] = {
    GenericEvent.__name__: {
        "description": (
            "The envelope of the models azuld stores without interpreting (delete, download, "
            "insert, retrohunt): only these keys are checked; the whole object is stored as "
            "posted, with `kafka_key` replaced."
        )
    },
    ErrorBody.__name__: {
        "description": (
            "Every error: `status` is the HTTP status code as a string, `error_enum` is always "
            "present."
        )
    },
}


# --- the document ---------------------------------------------------------------------------


def _error_responses() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for name, description in _ERRORS.values():
        out[name] = {
            "description": description,
            "headers": dict(_REQUEST_ID_HEADER),
            "content": {"application/json": {"schema": ErrorBody}},
        }
    out["RangeNotSatisfiable"]["headers"]["Content-Range"] = {
        "description": "`bytes */<size>`: the size of the blob.",
        "schema": {"type": "string", "pattern": "^bytes \\*/[0-9]+$"},
    }
    return out


def _role_list(roles: Iterable[str]) -> str:
    names = [*sorted(set(roles) - {ADMIN}), ADMIN]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _code_list(names: Iterable[str]) -> str:
    quoted = [f"`{name}`" for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def describe_access(access: Access) -> str:
    """Who may call a route, as a sentence ("" for a public route)."""
    if access.roles is None:
        return ""
    if access.by_model:
        by_roles: dict[frozenset[str], list[str]] = {}
        for model, roles in access.by_model.items():
            by_roles.setdefault(roles, []).append(model)
        clauses = [
            f"{_role_list(roles)} for {_code_list(models)}" for roles, models in by_roles.items()
        ]
        clauses.append(f"{_role_list(access.roles)} for the other models")
        sentence = f"Roles: {'; '.join(clauses)}."
    else:
        sentence = f"Roles: {_role_list(access.roles)}."
    if access.reset_needs_admin:
        sentence += " A true `reset` needs admin."
    return sentence


def _operation(route: Described) -> Schema:
    doc = route.doc
    op: Schema = {"operationId": doc.operation_id, "summary": doc.summary, "tags": [doc.tag]}
    description = " ".join(
        part for part in (doc.description, describe_access(route.access)) if part
    )
    if description:
        op["description"] = description
    op["parameters"] = [*doc.parameters, param_ref("RequestId")]
    if doc.body is not None:
        op["requestBody"] = doc.body
    codes = set(doc.errors) if route.access.public else {*doc.errors, 401, 403}
    responses = {
        **doc.replies,
        **{str(code): {"$ref": f"#/components/responses/{_ERRORS[code][0]}"} for code in codes},
    }
    op["responses"] = dict(sorted(responses.items()))
    if route.access.public:
        op["security"] = []
    return op


def _openapi_path(rule: str) -> str:
    """`/api/v2/event/<model>/<mode>` → `/api/v2/event/{model}/{mode}`."""
    return rule.replace("<", "{").replace(">", "}")


def _with_refs(value: Any, structs: dict[str, type[msgspec.Struct]]) -> Any:
    """`value` with every Struct class replaced by a `$ref` to its component (collected in
    `structs`)."""
    if isinstance(value, type) and issubclass(value, msgspec.Struct):
        known = structs.setdefault(value.__name__, value)
        assert known is value, f"two structs named {value.__name__}"
        return {"$ref": _REF.format(name=value.__name__)}
    if isinstance(value, dict):
        return {key: _with_refs(item, structs) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_with_refs(item, structs) for item in value]
    return value


def document(routes: Iterable[Described]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`, in their order."""
    paths: dict[str, dict[str, Schema]] = {}
    for route in routes:
        paths.setdefault(_openapi_path(route.rule), {})[route.method.lower()] = _operation(route)
    structs: dict[str, type[msgspec.Struct]] = {}
    resolved = _with_refs(
        {"paths": paths, "responses": _error_responses(), "schemas": SCHEMAS}, structs
    )
    _, generated = msgspec.json.schema_components(list(structs.values()), ref_template=_REF)
    for name, notes in _STRUCT_NOTES.items():
        generated[name].update(notes)
    generated[ErrorBody.__name__]["properties"]["status"]["pattern"] = "^[1-5][0-9][0-9]$"
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
        "tags": [{"name": name, "description": description} for name, description in TAGS],
        "security": [{}, {"bearer": []}],
        "paths": resolved["paths"],
        "components": {
            "schemas": {**generated, **resolved["schemas"]},
            "responses": resolved["responses"],
            "parameters": _PARAMETERS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `[auth]` (optional: only when tokens are set).",
                }
            },
        },
    }
