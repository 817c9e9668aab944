"""`GET /openapi.json`: the document is valid OpenAPI 3.1, names every route the app serves, and
the live daemon keeps to it under a schemathesis fuzz (no 500s, no hangs, every status code,
content type and body as documented)."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema
import msgspec
import pytest
import requests
import schemathesis
import trio
from hypothesis import strategies as st
from openapi_spec_validator import validate
from quart.typing import TestClientProtocol as Client
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from azuld.core import keys
from azuld.http import Services, create_app
from azuld.http.routes import OPENAPI, PLUGIN_PART_PATTERN, ROUTES
from azuld.models.events import (
    Author,
    BinaryEntity,
    BinaryEvent,
    Datastream,
    Feature,
    PathNode,
    PluginEntity,
    PluginEvent,
    StatusEntity,
    StatusEvent,
)
from tests.conftest import NOW, make_binary
from tests.daemon import running_daemon

DATA = b"hello openapi\n" * 40
SHA = hashlib.sha256(DATA).hexdigest()
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Every long-poll is capped by the daemon (dispatch.max_deadline_seconds), so a reply slower
# than this is a hang.
HANG_SECONDS = 10.0
DAEMON_ENV = {
    "AZULD_DISPATCH__MAX_DEADLINE_SECONDS": "0.3",
    "AZULD_DISPATCH__DEFAULT_DEADLINE_SECONDS": "0.1",
}


# --- the document ---------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    validate(OPENAPI)
    assert OPENAPI["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_dict(OPENAPI, config=schemathesis.Config())
    operations = [result.ok() for result in schema.get_all_operations()]  # each one resolves
    assert len(operations) == sum(len(item) for item in OPENAPI["paths"].values())


def test_patterns_are_the_servers() -> None:
    assert keys._PLUGIN_PART.pattern == PLUGIN_PART_PATTERN


def test_event_schemas_come_from_the_wire_structs() -> None:
    schemas = OPENAPI["components"]["schemas"]
    for struct in (BinaryEvent, StatusEvent, PluginEvent, Datastream):
        assert set(schemas[struct.__name__]["properties"]) == set(struct.__struct_fields__)
    assert schemas["BinaryEvent"]["properties"]["entity"] == {
        "$ref": "#/components/schemas/BinaryEntity"
    }


async def test_every_route_is_documented(services: Services) -> None:
    app = create_app(services)
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_0-9]+)>", r"{\1}", rule.rule)
        served |= {(method.lower(), path) for method in rule.methods or ()}
    documented = {(method, path) for path, item in OPENAPI["paths"].items() for method in item}
    # Quart answers HEAD on every GET route; the document names the one HEAD that means more.
    assert {r for r in served if r[0] != "head"} == {r for r in documented if r[0] != "head"}
    assert {r for r in documented if r[0] == "head"} <= served


def test_who_may_call_is_documented_as_the_table_says() -> None:
    for route in ROUTES:
        path = route.rule.replace("<", "{").replace(">", "}")
        operation = OPENAPI["paths"][path][route.method.lower()]
        needs_token = not route.access.public
        assert ("401" in operation["responses"]) == needs_token, route.rule
        assert ("403" in operation["responses"]) == needs_token, route.rule
        assert ("security" in operation) == (not needs_token), route.rule
        assert ("Roles: " in operation.get("description", "")) == needs_token, route.rule
    assert OPENAPI["paths"]["/openapi.json"]["get"]["security"] == []


async def test_served_at_openapi_json(client: Client) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert await response.get_json() == msgspec.json.decode(msgspec.json.encode(OPENAPI))


# --- the fuzz against the live daemon -------------------------------------------------------


@schemathesis.deserializer("multipart/form-data")
def _multipart(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    """The fetch reply's two parts by name, parsed as JSON, so the schema checks them."""
    return parse_fetch_reply(response.content, response.headers["content-type"][0])


def parse_fetch_reply(body: bytes, content_type: str) -> dict[str, Any]:
    """The two parts, checked to be exactly as azul-runner parses them (names, order, files)."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    chunks = body.split(b"--" + boundary)
    assert chunks[0] == b"", "multipart framing"
    assert chunks[-1] == b"--\r\n", "multipart framing"
    parts: dict[str, Any] = {}
    for chunk in chunks[1:-1]:
        head, _, payload = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        assert f'filename="{name}.json"'.encode() in head
        assert b"Content-Type: application/octet-stream" in head
        parts[name] = msgspec.json.decode(payload.removesuffix(b"\r\n"))
    assert list(parts) == ["info", "events"]
    return parts


_STRICT_MODELS: dict[str, type[msgspec.Struct]] = {
    "binary": BinaryEvent,
    "status": StatusEvent,
    "plugin": PluginEvent,
}


_FETCHES = {("GET", "/api/v2/event/{model}/{mode}"), ("GET", "/api/v1/processing/{entity_type}")}


def check_fetched_events_match_their_model(case: schemathesis.Case, response: Any) -> int:
    """Each fetched event against its own model's schema (the document can only say "an event of
    some model"), with no keys the Python client's strict models would reject."""
    if response.status_code != 200 or (case.method, case.operation.path) not in _FETCHES:
        return 0
    model = case.path_parameters.get("model") or case.path_parameters.get("entity_type")
    struct = _STRICT_MODELS.get(str(model))
    if struct is None:
        return 0
    parts = parse_fetch_reply(response.content, response.headers["content-type"][0])
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"#/components/schemas/{struct.__name__}", "components": OPENAPI["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    for event in parts["events"]["events"]:
        validator.validate(event)
        extra = set(event) - set(struct.__struct_fields__)
        assert not extra, f"{model} event has keys its model does not: {extra}"
        msgspec.convert(event, struct)
    return len(parts["events"]["events"])


def _fetch_job(http: requests.Session, url: str, name: str) -> BinaryEvent:
    reply = http.get(
        f"{url}/api/v2/event/binary/active",
        params={"name": name, "version": "1", "r-historic": "true", "deadline": "5"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    events = parse_fetch_reply(reply.content, reply.headers["Content-Type"])["events"]
    return msgspec.convert(events["events"][0], BinaryEvent)


def _post(http: requests.Session, url: str, model: str, events: list[Any]) -> None:
    reply = http.post(
        f"{url}/api/v2/event?model={model}", data=msgspec.json.encode(events), timeout=30
    )
    assert reply.status_code == 200, reply.text


def _seed(url: str) -> None:
    """A blob, a binary event, a plugin registration, a job finished with a feature and one
    failed and re-offered, so the fuzz meets real data in fetches, downloads and every list."""
    with requests.Session() as http:
        reply = http.post(f"{url}/api/v3/stream/samples/content", data=DATA, timeout=30)
        assert reply.status_code == 200, reply.text
        stream = msgspec.convert(reply.json()["data"], Datastream)
        _post(http, url, "binary", [make_binary(DATA.decode(), streams=[stream], size=len(DATA))])
        author = Author(name="Seeder", version="1", category="plugin")
        entity = PluginEntity(name="Seeder", version="1", description="seeds the fuzz")
        _post(
            http,
            url,
            "plugin",
            [PluginEvent(model_version=6, timestamp=NOW, author=author, entity=entity)],
        )
        job = _fetch_job(http, url, "Seeder")
        node = PathNode(author=author, action="enriched", sha256=SHA, timestamp=NOW)
        result = BinaryEvent(
            model_version=6,
            timestamp=NOW,
            author=author,
            source=msgspec.structs.replace(job.source, path=[*job.source.path, node]),
            entity=BinaryEntity(
                sha256=SHA, features=[Feature(name="greeting", value="hello", type="string")]
            ),
            action="enriched",
        )
        done = StatusEntity(input=job, status="completed", runtime=0.1, results=[result])
        _post(
            http,
            url,
            "status",
            [StatusEvent(model_version=6, timestamp=NOW, author=author, entity=done)],
        )
        failer = Author(name="Failer", version="1", category="plugin")
        job = _fetch_job(http, url, "Failer")
        failed = StatusEntity(
            input=job, status="error-exception", error="boom", message="Traceback\nValueError"
        )
        _post(
            http,
            url,
            "status",
            [StatusEvent(model_version=6, timestamp=NOW, author=failer, entity=failed)],
        )
        reply = http.post(
            f"{url}/api/azuld/v1/reoffer", json={"job_ids": [job.dequeued]}, timeout=30
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["reoffered"][0]["ok"], reply.text


# Examples per operation and mode (0: not run). Whole events are slow to generate (nested
# structs, up to a second each in negative mode), so the routes that take them get fewer, and the
# seed aliases, which share their handlers with the v2 routes, a few positive cases only. Routes
# with nothing to vary but the request id get a few.
EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 30}
FIXED_ROUTE_EXAMPLES = {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 0}
FEWER_EXAMPLES = {
    "POST /api/v2/event": {GenerationMode.POSITIVE: 15, GenerationMode.NEGATIVE: 6},
    "POST /api/v1/events/plugin": {GenerationMode.POSITIVE: 5, GenerationMode.NEGATIVE: 0},
    "POST /api/v1/processing/{entity_type}": {
        GenerationMode.POSITIVE: 5,
        GenerationMode.NEGATIVE: 0,
    },
}
# Range values schemathesis does not make: positions of digit-like characters (Latin-1 has
# superscripts, for which str.isdigit is true), and any Latin-1 text (what a header can carry).
_LATIN1 = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
_POSITION = st.text(st.sampled_from("0123456789\xb9\xb2\xb3 +"), max_size=3)
RANGES = st.one_of(
    st.none(),
    st.from_regex(r"\Abytes=([0-9]{1,4}-[0-9]{0,4}|-[0-9]{1,4})\Z"),
    st.builds("bytes={}-{}".format, _POSITION, _POSITION),
    st.text(_LATIN1, max_size=12).map(str.lstrip),  # requests refuses leading whitespace
)


def _with_range(pair: tuple[schemathesis.Case, str | None]) -> schemathesis.Case:
    case, value = pair
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "range"}
    if value is not None:
        headers["Range"] = value
    case.headers = headers
    return case


def _budget(operation: schemathesis.APIOperation) -> dict[GenerationMode, int]:
    if operation.label in FEWER_EXAMPLES:
        return FEWER_EXAMPLES[operation.label]
    params = [p for p in operation.iter_parameters() if p.name != "X-Request-Id"]
    if not params and len(operation.body) == 0:
        return FIXED_ROUTE_EXAMPLES  # negative mode could make nothing invalid here
    return EXAMPLES


def _strategies(operation: schemathesis.APIOperation) -> list[tuple[str, Any, int]]:
    """(label, strategy, examples) to run for `operation`."""
    budget = _budget(operation)
    out = [
        (f"{operation.label} [{mode.value}]", operation.as_strategy(mode), budget[mode])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if budget[mode]
    ]
    if operation.path == "/api/v3/stream/{source}/{label}/{sha256}":
        seeded = operation.as_strategy(
            path_parameters={"source": "samples", "label": "content", "sha256": SHA}
        )
        if operation.method.upper() == "GET":
            seeded = st.tuples(seeded, RANGES).map(_with_range)
        out.append(
            (f"{operation.label} [the seeded blob]", seeded, EXAMPLES[GenerationMode.POSITIVE])
        )
    if operation.label == "GET /api/v2/event/{model}/{mode}":
        for model in ("binary", "status", "plugin"):
            seeded = operation.as_strategy(
                path_parameters={"model": model}, query={"r-historic": "true"}
            )
            out.append((f"{operation.label} [historic {model}]", seeded, 10))
    return out


# Edge values run once each, beside the generated ones (a fuzz of 30 cases rarely meets them).
EDGE_RANGES = [
    "bytes=0-0",
    "bytes=0-",
    "bytes=-1",
    "bytes=-0",
    f"bytes={len(DATA) - 1}-",
    f"bytes={len(DATA)}-",
    f"bytes=-{len(DATA)}",
    "bytes=-99999999999999999999",
    "bytes=0-99999999999999999999",
    "bytes=5-4",
    "bytes=1-2,3-4",
    "bytes=-",
    "bytes=",
    "bytes= 1-2 ",
    "items=0-1",
    "bytes=\xb2-",  # superscript two: str.isdigit() is true, int() refuses it
    "bytes=0-\xb3",
    "bytes=-\xb9",
]
EDGE_FETCH_QUERIES = (
    [
        {"deadline": value}
        for value in ("nan", "inf", "-inf", "1e309", "-0", "1e-400", "0x10", "1_0", "\xb2")
    ]
    + [
        {"count": value}
        for value in ("-5", "0", "99999999999999999999999", "1_000", "\xb2", "9" * 5000)
    ]
    + [
        {"r-under-content-size": "10", "r-over-content-size": "20"},
        {"r-streams": ","},
        {"r-streams": "*,"},
        {"r-source": ""},
        {"r-content": "true", "r-action": "sourced"},
    ]
)


def _edge_cases(operation: schemathesis.APIOperation) -> list[schemathesis.Case]:
    if operation.label == "GET /api/v3/stream/{source}/{label}/{sha256}":
        blob = {"source": "samples", "label": "content", "sha256": SHA}
        return [operation.Case(path_parameters=blob, headers={"Range": r}) for r in EDGE_RANGES]
    if operation.label == "GET /api/v2/event/{model}/{mode}":
        path = {"model": "binary", "mode": "active"}
        return [
            operation.Case(
                path_parameters=path, query={"name": "Edge", "r-historic": "true", **query}
            )
            for query in EDGE_FETCH_QUERIES
        ]
    return []


class Fuzz:
    """One run over every operation: what failed, how long the slowest reply took, and how
    many fetch replies carried events (so the per-model event check is not vacuous)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failures: list[str] = []
        self.slowest = 0.0
        self.events_seen = 0
        self.seconds: dict[str, float] = {}

    def check(self, case: schemathesis.Case) -> None:
        """Send `case`; raise what schemathesis (or the per-model event check) finds wrong."""
        started = time.monotonic()
        try:
            response = case.call(base_url=self.url, timeout=HANG_SECONDS)
        except requests.Timeout:
            raise AssertionError(
                f"no reply within {HANG_SECONDS} s (a hang):\n{case.as_curl_command()}"
            ) from None
        self.slowest = max(self.slowest, time.monotonic() - started)
        case.validate_response(response, checks=CHECKS)
        try:
            self.events_seen += check_fetched_events_match_their_model(case, response)
        except Exception as exc:
            raise AssertionError(f"{exc}\n{case.as_curl_command()}") from exc

    def operation(self, label: str, strategy: Any, examples: int) -> None:
        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,  # the same cases every run: a failure reproduces
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrink: bounded
            suppress_health_check=list(hypothesis.HealthCheck),
            report_multiple_bugs=True,
        )
        @hypothesis.given(case=strategy)
        def run(case: schemathesis.Case) -> None:
            self.check(case)

        started = time.monotonic()
        try:
            run()
        # Hypothesis re-raises the distinct failures it found; schemathesis's FailureGroup is a
        # BaseExceptionGroup.
        except (Exception, BaseExceptionGroup) as exc:
            self.failures.append(f"{label}:\n{exc}")
        self.seconds[label] = time.monotonic() - started

    def edges(self, operation: schemathesis.APIOperation) -> None:
        for case in _edge_cases(operation):
            try:
                self.check(case)
            except (Exception, BaseExceptionGroup) as exc:
                self.failures.append(f"{operation.label} [edge]:\n{exc}")


def fuzz(url: str) -> Fuzz:
    """Every operation in positive and negative cases, plus the seeded blob and events."""
    _seed(url)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=schemathesis.Config())
    run = Fuzz(url)
    for result in schema.get_all_operations():
        operation = result.ok()
        run.edges(operation)
        for label, strategy, examples in _strategies(operation):
            run.operation(label, strategy, examples)
    return run


@pytest.mark.slow
async def test_live_daemon_keeps_to_its_document(tmp_path: Path) -> None:
    async with running_daemon(tmp_path / "data", env=DAEMON_ENV) as daemon:
        run = await trio.to_thread.run_sync(fuzz, daemon.url)
    for label, seconds in sorted(run.seconds.items(), key=lambda item: -item[1])[:5]:
        print(f"{seconds:6.2f} s  {label}")
    assert not run.failures, "\n\n".join(run.failures)
    assert run.slowest < HANG_SECONDS
    assert run.events_seen > 0
