"""Fetch parameters: the query of `GET /api/v2/event/<model>/{active,passive}` (reference 2.3, 5.1).

`parse_consume_params` turns the raw query pairs into a frozen `ConsumeParams` or raises
`Unprocessable` (422) with a message naming the parameter, as Go does with "bad parameters".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from azuld.core.delivery import Lane
from azuld.core.keys import NAME_PATTERN, is_valid_plugin_part
from azuld.errors import Unprocessable
from azuld.models.avro import check_avro_model
from azuld.models.events import BINARY_ACTIONS, MODELS

__all__ = ["ConsumeParams", "parse_bool", "parse_consume_params"]


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(name: str, value: str) -> bool:
    """Go `strconv.ParseBool`: anything else is an error naming the parameter."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise Unprocessable(f"parameter {name}={value!r} is not a boolean (use true or false)")


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Unprocessable(f"parameter {name}={value!r} is not an integer") from None


@dataclass(frozen=True, slots=True)
class ConsumeParams:
    """What one fetch request asked for. Only `key` decides the consumer groups (reference 5.1);
    the other filters are applied per request."""

    model: str
    name: str
    version: str
    deployment_key: str
    active: bool
    count: int
    deadline_seconds: float
    lanes: tuple[str, ...]
    r_source: tuple[str, ...] = ()
    r_action: tuple[str, ...] = ()
    d_action: tuple[str, ...] = ()
    r_content: bool = False
    under_content_size: int = 0
    over_content_size: int = 0
    streams: tuple[tuple[str, tuple[str, ...]], ...] = ()
    d_self: bool = False
    max_security: str = ""
    reset: bool = False
    debug: bool = False
    # azuld's fair lanes: the least share of handouts historic gets while it has a backlog.
    historic_share: float | None = None
    # The reply's `events` part in Avro (Go plugins); not part of the key, as in Go.
    avro: bool = False
    # azuld's watchers (`azuld watch`): a passive key that is never registered, commits nothing
    # and is forgotten once no poll has come for `dispatch.ephemeral_idle_seconds`. Its live
    # lanes start at `since` (Unix seconds) or `last` records back on each partition, if given.
    ephemeral: bool = False
    since: float | None = None
    last: int | None = None

    @property
    def key(self) -> str:
        """The plugin key: `<name>-<version>-<model>[-<sources>-<actions>]-<flags>` (flag `W`,
        an ephemeral watcher, is azuld's own)."""
        parts = [self.name, self.version, self.model]
        if self.model == "binary":
            parts.append(".".join(self.r_source) or "allsrc")
            parts.append(".".join(self.r_action) or "alltype")
        flags = "".join(
            letter
            for letter, on in (
                ("E", Lane.EXPEDITE in self.lanes),
                ("L", Lane.LIVE in self.lanes),
                ("H", Lane.HISTORIC in self.lanes),
                ("D", self.debug),
                ("W", self.ephemeral),
            )
            if on
        )
        parts.append(flags)
        return "-".join(parts)

    @property
    def stream_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.streams)


def parse_consume_params(
    model: str,
    active: bool,
    query: Iterable[tuple[str, str]],
    *,
    default_deadline_seconds: float,
    max_deadline_seconds: float,
    max_count: int,
) -> ConsumeParams:
    """Parse and check a fetch query.

    `deadline=0` means "wait as long as allowed": Go blocks without limit (quirk 2); azuld caps
    every long-poll at `max_deadline_seconds`. Unknown parameters are ignored, as in Go.

    Raises:
        Unprocessable: a parameter is malformed or the combination is not allowed.
    """
    if model not in MODELS:
        raise Unprocessable(f"unknown model {model!r}; expected one of {', '.join(MODELS)}")
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {"r-source": [], "r-action": [], "d-action": [], "r-streams": []}
    for name, value in query:
        if name in multi:
            multi[name].append(value)
        else:
            single[name] = value

    def flag(name: str) -> bool:
        return parse_bool(name, single[name]) if name in single else False

    name = single.get("name", "")
    version = single.get("version", "")
    if not is_valid_plugin_part(name):
        raise Unprocessable(
            f"parameter name={name!r} is required: letters, digits and ._+- (up to 100)"
        )
    if version and not is_valid_plugin_part(version):
        raise Unprocessable(f"parameter version={version!r} may only use letters, digits and ._+-")

    count = _parse_int("count", single["count"]) if "count" in single else 1
    count = min(max(count, 1), max_count)

    if "deadline" in single:
        # Go takes whole seconds; fractions are accepted too.
        try:
            deadline = float(single["deadline"])
        except ValueError:
            raise Unprocessable(
                f"parameter deadline={single['deadline']!r} is not a number of seconds"
            ) from None
        if deadline != deadline or deadline in (float("inf"), float("-inf")):
            raise Unprocessable(f"parameter deadline={single['deadline']!r} is not a number")
        if deadline < 0:
            raise Unprocessable(f"parameter deadline={single['deadline']!r} must not be negative")
        if deadline == 0:
            deadline = max_deadline_seconds
    else:
        deadline = default_deadline_seconds
    deadline = min(deadline, max_deadline_seconds)

    avro = flag("avro-format")
    if avro:
        check_avro_model(model)  # before any lease is taken: the reply could not carry it

    expedite = flag("r-expedite")
    if expedite and model != "binary":
        raise Unprocessable("r-expedite is only valid for model binary")
    lanes = tuple(
        lane
        for lane, on in (
            (Lane.EXPEDITE, expedite),
            (Lane.LIVE, flag("r-live")),
            (Lane.HISTORIC, flag("r-historic")),
        )
        if on
    )
    if not lanes:
        raise Unprocessable("requires at least one of r-expedite, r-live or r-historic")

    for param in ("r-action", "d-action"):
        for action in multi[param]:
            if action not in BINARY_ACTIONS:
                raise Unprocessable(
                    f"parameter {param}={action!r} is not a binary action; "
                    f"expected one of {', '.join(BINARY_ACTIONS)}"
                )
    for source in multi["r-source"]:
        if not NAME_PATTERN.fullmatch(source):
            raise Unprocessable(
                f"parameter r-source={source!r} is not a valid source name "
                "(1-100 letters, digits, '_' or '-')"
            )

    r_content = flag("r-content")
    r_action = tuple(multi["r-action"])
    if r_content:
        if r_action or multi["d-action"]:
            raise Unprocessable("r-content cannot be combined with r-action or d-action")
        r_action = ("sourced", "extracted")

    under = _parse_int("r-under-content-size", single.get("r-under-content-size", "0"))
    over = _parse_int("r-over-content-size", single.get("r-over-content-size", "0"))
    if under < 0 or over < 0:
        raise Unprocessable("r-under-content-size and r-over-content-size must not be negative")
    if over > under > 0:
        raise Unprocessable(
            f"r-over-content-size ({over}) is larger than r-under-content-size ({under})"
        )

    streams: dict[str, tuple[str, ...]] = {}
    for spec in multi["r-streams"]:
        label, *formats = spec.split(",")
        if not label:
            raise Unprocessable(f"parameter r-streams={spec!r} needs a label before the first ','")
        streams[label] = tuple(f for f in formats if f)

    historic_share: float | None = None
    if "historic-share" in single:
        try:
            historic_share = float(single["historic-share"])
        except ValueError:
            historic_share = -1.0
        if not 0.0 <= historic_share <= 1.0:
            raise Unprocessable(
                f"parameter historic-share={single['historic-share']!r} must be between 0 and 1"
            )

    ephemeral, since, last = _parse_watch(active, flag("ephemeral"), single)

    return ConsumeParams(
        model=model,
        name=name,
        version=version,
        deployment_key=single.get("deployment_key", ""),
        active=active,
        count=count,
        deadline_seconds=deadline,
        lanes=lanes,
        r_source=tuple(multi["r-source"]),
        r_action=r_action,
        d_action=tuple(multi["d-action"]),
        r_content=r_content,
        under_content_size=under,
        over_content_size=over,
        streams=tuple(streams.items()),
        d_self=flag("d-self"),
        max_security=single.get("max-security", ""),
        reset=flag("reset"),
        debug=flag("debug"),
        historic_share=historic_share,
        avro=avro,
        ephemeral=ephemeral,
        since=since,
        last=last,
    )


def _parse_watch(
    active: bool, ephemeral: bool, single: dict[str, str]
) -> tuple[bool, float | None, int | None]:
    """`ephemeral`, `since` and `last`: a watcher's passive key and where it starts."""
    if ephemeral and active:
        raise Unprocessable("ephemeral=true is only for passive fetches (a watcher's feed)")
    since: float | None = None
    last: int | None = None
    if "since" in single:
        try:
            since = float(single["since"])
        except ValueError:
            since = -1.0
        if not 0.0 <= since < float("inf"):
            raise Unprocessable(
                f"parameter since={single['since']!r} must be a time in Unix seconds"
            )
    if "last" in single:
        last = _parse_int("last", single["last"])
        if last < 0:
            raise Unprocessable(f"parameter last={last} must not be negative")
    if (since is not None or last is not None) and not ephemeral:
        raise Unprocessable(
            "since and last need ephemeral=true (a durable key starts where it was first seen)"
        )
    if since is not None and last is not None:
        raise Unprocessable("give since or last, not both")
    return ephemeral, since, last
