"""The settings, section by section: frozen dataclasses whose fields each state their default,
their range or format (`setting(default, check=...)`, the checks in `azuld.checks`) and whether
SIGHUP applies them to a running daemon (`reload=True`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from azuld import checks
from azuld.checks import Check

__all__ = [
    "CLIENT_ONLY_VARIABLES",
    "ENV_PREFIX",
    "AuthSettings",
    "CliSettings",
    "DispatchSettings",
    "EventsSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "SourceSettings",
    "StorageSettings",
    "TokenSettings",
    "default_data_dir",
    "is_secret",
    "is_table_list",
    "setting",
]

_SECRET_WORDS = ("secret", "password", "token", "access_key", "secret_key")

ENV_PREFIX = "AZULD_"
# `AZULD_*` variables the command line reads that are not settings (`AZULD_SERVER` would
# otherwise read as the `[server]` table).
CLIENT_ONLY_VARIABLES = frozenset({"AZULD_SERVER", "AZULD_CONFIG"})


def setting(
    default: Any = dataclasses.MISSING, *, check: Check | None = None, reload: bool = False
) -> Any:
    """A settings field: its default, its range or format, and whether SIGHUP applies it."""
    return field(default=default, metadata={"check": check, "reload": reload})


def default_data_dir() -> Path:
    """`$STATE_DIRECTORY` under systemd, else `$XDG_STATE_HOME/azuld` or `~/.local/state/azuld`."""
    if state := os.environ.get("STATE_DIRECTORY"):
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "azuld"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = setting("127.0.0.1:8111", check=checks.LISTEN)
    graceful_timeout_seconds: float = setting(3.0, check=checks.at_least(0))
    max_event_body_bytes: int = setting(16 * 1024 * 1024, check=checks.at_least(256))
    max_upload_bytes: int = setting(4 * 1024 * 1024 * 1024, check=checks.at_least(1))
    upload_body_timeout_seconds: float = setting(600.0, check=checks.at_least(1))
    tls_certfile: str = setting("", check=checks.READABLE_FILE)
    tls_keyfile: str = setting("", check=checks.READABLE_FILE)
    http_server: Literal["azuld", "hypercorn"] = "azuld"
    keep_alive_timeout_seconds: float = setting(75.0, check=checks.above(0))
    # Worker processes sharing `listen` (`azuld serve --processes N`); more than 1 needs Kafka.
    processes: int = setting(1, check=checks.between(1, checks.MAX_PROCESSES))
    # 0: none. Else worker k (0 to processes - 1) also listens on its own port, this + k.
    worker_port_base: int = setting(0, check=checks.between(0, 65536 - checks.MAX_PROCESSES))
    head_timeout_seconds: float = setting(30.0, check=checks.between(0.1, 3600))
    metrics_max_label_values: int = setting(500, check=checks.between(1, 100_000))
    rejected_log_lines_per_second: float = setting(10.0, check=checks.between(0, 10_000))


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """A source's topics: `[[events.sources]]` tables in TOML."""

    name: str = setting(check=checks.NAME)
    # 0: events.default_partitions
    partitions: int = setting(0, check=checks.between(0, checks.MAX_PARTITIONS))
    retention_days: float = setting(0.0, check=checks.at_least(0))  # 0: keep forever


@dataclass(frozen=True, slots=True)
class EventsSettings:
    backend: Literal["embedded", "kafka"] = "embedded"
    topic_prefix: str = setting("local", check=checks.NAME)
    default_partitions: int = setting(1, check=checks.between(1, checks.MAX_PARTITIONS))
    sources: tuple[SourceSettings, ...] = ()
    embedded_synchronous: Literal["normal", "full"] = "normal"
    kafka_bootstrap: str = setting("127.0.0.1:9092", check=checks.HOST_PORTS)
    kafka_replication_factor: int = setting(1, check=checks.at_least(1))
    kafka_connect_timeout_seconds: float = setting(60.0, check=checks.above(0))
    kafka_request_timeout_seconds: float = setting(30.0, check=checks.above(0))
    kafka_tail_cache_records: int = setting(256, check=checks.at_least(0))
    kafka_message_max_bytes: int = setting(3 * 1024 * 1024, check=checks.at_least(1024))


@dataclass(frozen=True, slots=True)
class StorageSettings:
    backend: Literal["local", "s3"] = "local"
    s3_endpoint: str = setting("http://127.0.0.1:9000", check=checks.HTTP_URL)
    s3_bucket: str = setting("azul", check=checks.BUCKET)
    s3_region: str = setting("us-east-1", check=checks.REGION)
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = setting("", check=checks.KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """A bearer token: `[[auth.tokens]]` tables in TOML."""

    name: str = setting(check=checks.TOKEN_NAME)
    token: str = setting(check=checks.TOKEN)
    roles: tuple[str, ...] = setting(("plugin",), check=checks.TOKEN_ROLES)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """No tokens: every request is allowed (the embedded default, like the Go dispatcher). With
    tokens: requests need a token with the route's role, except from `open_networks`, which get
    `open_roles` without a token (azul-runner sends none)."""

    tokens: tuple[TokenSettings, ...] = setting((), reload=True)
    open_networks: tuple[str, ...] = setting((), check=checks.NETWORKS, reload=True)
    open_roles: tuple[str, ...] = setting(("plugin",), check=checks.ROLES, reload=True)


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    lease_seconds: float = setting(120.0, check=checks.above(0), reload=True)
    max_attempts: int = setting(3, check=checks.at_least(1), reload=True)
    default_deadline_seconds: float = setting(5.0, check=checks.above(0), reload=True)
    max_deadline_seconds: float = setting(60.0, check=checks.above(0), reload=True)
    max_count: int = setting(1000, check=checks.at_least(1), reload=True)
    # Read when a plugin key is first seen, so a new value needs a restart to reach every key.
    read_ahead: int = setting(64, check=checks.at_least(1))
    # At most 20,000: a commit carries the finished offsets of a window, which must fit Kafka's
    # 4 KiB of commit metadata (core.cursor).
    window: int = setting(4000, check=checks.between(1, 20_000))
    max_job_seconds: float = setting(3600.0, check=checks.at_least(0), reload=True)
    # The cache is sized when the daemon starts.
    replay_cache_bytes: int = setting(64 * 1024 * 1024, check=checks.at_least(0))
    replay_min_runtime_seconds: float = setting(1.0, check=checks.at_least(0), reload=True)
    historic_share: float = setting(0.0, check=checks.between(0, 1), reload=True)
    max_events_per_post: int = setting(1000, check=checks.at_least(1), reload=True)
    max_polls_per_key: int = setting(200, check=checks.at_least(1), reload=True)
    # How long every instance remembers the final statuses stored anywhere (so that a job is
    # neither offered nor stored twice when its partition moves). Sized when the daemon starts.
    finished_memory_seconds: float = setting(600.0, check=checks.at_least(0))
    # Signs job ids (all instances of a cluster must share it). Empty: one is generated at the
    # first start and kept in the event log, where every instance finds it.
    job_id_secret: str = setting("", check=checks.SECRET_OR_EMPTY)
    # On a shared log (Kafka): how long the commits that statuses moved are gathered before they
    # are stored, in one request per consumer group (0: each post stores its own before it is
    # answered). A status is stored before it is answered either way; `finished_memory_seconds`
    # covers the jobs whose commits an instance that died had not stored yet.
    commit_interval_seconds: float = setting(0.05, check=checks.between(0, 5), reload=True)
    # An ephemeral key (a watcher's feed) is forgotten once no poll has come for this long.
    ephemeral_idle_seconds: float = setting(60.0, check=checks.between(1, 86400), reload=True)


@dataclass(frozen=True, slots=True)
class CliSettings:
    """Read by the command line only: where `azuld status`, `submit`, `plugin run`… find the
    daemon. Empty: the `server.listen` address of the same file."""

    server: str = setting("", check=checks.HTTP_URL_OR_EMPTY)


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """`max-security` enforcement: Azul's label model (`checker = "model"`, see
    `azuld.core.security`) or an external `azul-security can-access` style command."""

    checker: Literal["model", "command"] = "model"
    # The label model. Classifications from least to most restrictive.
    classifications: tuple[str, ...] = setting(
        ("UNOFFICIAL", "OFFICIAL", "OFFICIAL:SENSITIVE", "PROTECTED", "SECRET", "TOP SECRET"),
        check=checks.LABEL_WORDS_NON_EMPTY,
    )
    caveats: tuple[str, ...] = setting((), check=checks.LABEL_WORDS)
    releasability: tuple[str, ...] = setting((), check=checks.LABEL_WORDS)
    releasability_prefix: str = setting("REL:", check=checks.NON_EMPTY)
    releasability_origin: str = setting("", check=checks.LABEL)
    releasable_from: str = setting("", check=checks.LABEL)
    markings: tuple[str, ...] = setting(
        ("TLP:CLEAR", "TLP:GREEN", "TLP:AMBER", "TLP:AMBER+STRICT", "TLP:RED"),
        check=checks.LABEL_WORDS,
    )
    enforced_markings: tuple[str, ...] = setting(
        ("TLP:AMBER+STRICT", "TLP:RED"), check=checks.LABEL_WORDS
    )
    # The label of an event that carries none ("": such events are not checked, as in Go).
    default_label: str = setting("", check=checks.LABEL)
    # checker = "command": argv, to which the clearance and the label are appended.
    command: tuple[str, ...] = setting(("azul-security", "can-access"), check=checks.NON_EMPTY)
    command_timeout_seconds: float = setting(10.0, check=checks.above(0))
    command_concurrency: int = setting(4, check=checks.at_least(1))
    command_retry_seconds: float = setting(30.0, check=checks.at_least(0))
    # Decisions kept per (max-security, label) pair.
    cache_entries: int = setting(4096, check=checks.at_least(1))


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    log_level: Literal["debug", "info", "warning", "error"] = setting("info", reload=True)
    log_format: Literal["auto", "text", "json", "keyvalue"] = "auto"
    server: ServerSettings = ServerSettings()
    events: EventsSettings = EventsSettings()
    storage: StorageSettings = StorageSettings()
    dispatch: DispatchSettings = DispatchSettings()
    auth: AuthSettings = AuthSettings()
    cli: CliSettings = CliSettings()
    security: SecuritySettings = SecuritySettings()


def is_secret(key: str) -> bool:
    """Whether a setting named `key` holds a secret (never shown: logged as `***`, a wrong
    value named by its length)."""
    return any(word in key for word in _SECRET_WORDS)


def is_table_list(hint: Any) -> bool:
    """Whether a field's type is a list of tables (`[[auth.tokens]]`): a tuple of dataclasses."""
    if get_origin(hint) is not tuple:
        return False
    item = get_args(hint)[0]
    return isinstance(item, type) and dataclasses.is_dataclass(item)
