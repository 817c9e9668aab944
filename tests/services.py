"""Real services for tests: a single-node Apache Kafka broker (KRaft) and moto's S3 server.

Both run as child processes on 127.0.0.1, on free ports, with their files under a work folder:

    broker = start_kafka(work_dir)        # fetches Kafka's jars on first use (scripts/kafka-fetch)
    broker.bootstrap                      # "127.0.0.1:PORT"
    broker.restart()                      # same ports, same data
    broker.stop()

    s3 = start_moto(work_dir)
    s3.endpoint                           # "http://127.0.0.1:PORT"

The calls block (the fixtures that use them are session-scoped, outside trio). From inside a trio
test use the `a`-prefixed methods (`await broker.arestart()`), which wait in a worker thread.

A service that cannot start raises RuntimeError with the reason and the tail of its log: tests that
need it fail, they are never skipped. Only processes started here are ever signalled, by PID.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import http.client
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
import weakref
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
KAFKA_FETCH = REPO / "scripts" / "kafka-fetch"
HOST = "127.0.0.1"

KAFKA_START_TIMEOUT = 60.0
MOTO_START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
FETCH_TIMEOUT = 900.0

__all__ = [
    "KafkaBroker",
    "S3Server",
    "ServiceProcess",
    "fetch_kafka",
    "free_port",
    "start_kafka",
    "start_moto",
]


# --------------------------------------------------------------------------------------------
# Processes


def free_port(exclude: frozenset[int] = frozenset()) -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Linux: the child gets SIGKILL when the thread that spawned it exits, so a crashed or
    # SIGKILLed pytest does not leave a JVM behind. Only used when spawning from the main thread.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_live: weakref.WeakSet[ServiceProcess] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        proc.kill()


class ServiceProcess:
    """One child process writing to a log file; signalled only through its own PID."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        main_thread = threading.current_thread() is threading.main_thread()
        with self.log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%H:%M:%S')} starting: {argv}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=dict(env) if env is not None else None,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # the terminal's Ctrl-C goes to pytest only
                    preexec_fn=_die_with_parent if main_thread else None,
                )
            except OSError as exc:
                raise RuntimeError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
        _live.add(self)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to `timeout` seconds, then SIGKILL. No-op if not running."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        proc.wait()
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL and reap. No-op if not running."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait()
        _live.discard(self)

    def rss_bytes(self) -> int | None:
        """Resident memory of the process (Linux), or None when it is not running."""
        if not self.running:
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready()` until it is true; RuntimeError with the log tail if the process dies
        or `timeout` passes."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc is not None else None
                raise RuntimeError(
                    f"{self.name} exited with code {code} before {what}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if ready():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.name} did not get to {what} within {timeout:.0f} s (killed it); "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)


# --------------------------------------------------------------------------------------------
# Kafka


def fetch_kafka(timeout: float = FETCH_TIMEOUT) -> Path:
    """The Kafka folder (with libs/*.jar), fetched with Maven by scripts/kafka-fetch if needed."""
    try:
        done = subprocess.run(
            [str(KAFKA_FETCH)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"scripts/kafka-fetch failed: {exc}") from exc
    err = done.stderr.decode("utf-8", "replace")
    if done.returncode != 0:
        tail = "\n".join(err.splitlines()[-40:])
        raise RuntimeError(f"scripts/kafka-fetch exited with {done.returncode}:\n{tail}")
    home = Path(done.stdout.decode().strip().splitlines()[-1])
    if not any((home / "libs").glob("kafka_2.13-*.jar")):
        raise RuntimeError(f"scripts/kafka-fetch printed {home}, which has no Kafka jars")
    return home


def _storage_tool_class(libs: Path) -> str:
    """kafka.tools.StorageTool (core, up to 4.1 at least) or its Java successor."""
    for jar in sorted(libs.glob("*.jar")):
        if not jar.name.startswith(("kafka_2.13-", "kafka-tools-", "kafka-storage-")):
            continue
        with zipfile.ZipFile(jar) as zf:
            names = set(zf.namelist())
        for cls in ("kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool"):
            if cls.replace(".", "/") + ".class" in names:
                return cls
    raise RuntimeError(f"no StorageTool class in {libs}")


def _cluster_id() -> str:
    """A random Kafka Uuid as Kafka writes it (URL-safe base64, 22 characters, no leading '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


def _api_versions_ok(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when a Kafka ApiVersions (v0) request on host:port gets a reply without error: the
    broker accepts connections *and* processes requests (it enables that once it is unfenced)."""
    client_id = b"azuld-probe"
    correlation_id = 0x0AD1
    header = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(header)) + header)
            head = _recv_exact(sock, 10)  # size, correlation id, error code
    except OSError:
        return False
    if head is None:
        return False
    _size, corr, error = struct.unpack(">iih", head)
    return bool(corr == correlation_id and error == 0)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


class _Service:
    """What both services share: a child process on fixed ports, started, stopped, killed and
    restarted (same ports, same files) from sync fixtures or, with the `a` methods, from trio."""

    process: ServiceProcess

    def spawn(self) -> None:
        raise NotImplementedError

    def wait_ready(self, timeout: float | None = None) -> None:
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def rss_bytes(self) -> int | None:
        return self.process.rss_bytes()

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def ensure_running(self) -> None:
        """Start again (same ports and data) if a test left it stopped or killed."""
        if not self.process.running:
            self.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        self.process.stop(timeout)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        """Stop (SIGTERM, then SIGKILL) and start again on the same ports. moto keeps nothing
        across a restart: its buckets are gone."""
        self.stop()
        self.start()

    async def astop(self) -> None:
        await trio.to_thread.run_sync(self.stop)

    async def astart(self) -> None:
        self.spawn()  # spawn from the calling thread, so the child dies with pytest
        await trio.to_thread.run_sync(self.wait_ready)

    async def arestart(self) -> None:
        await self.astop()
        await self.astart()


class KafkaBroker(_Service):
    """A single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1."""

    def __init__(
        self,
        work_dir: Path,
        *,
        home: Path,
        port: int,
        controller_port: int,
        config: Mapping[str, str] | None = None,
        heap: str = "512m",
        start_timeout: float = KAFKA_START_TIMEOUT,
    ) -> None:
        self.work_dir = work_dir
        self.home = home
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.start_timeout = start_timeout
        self.cluster_id = _cluster_id()
        self.data_dir = work_dir / "data"
        self.config_path = work_dir / "server.properties"
        self.log4j_path = work_dir / "log4j2.properties"
        self.process = ServiceProcess("kafka", work_dir / "kafka.log")
        self.config = self._config(config or {})

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def _config(self, extra: Mapping[str, str]) -> dict[str, str]:
        config = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a SIGKILL the new incarnation can only register once the old session
            # expires (DUPLICATE_BROKER_REGISTRATION until then): keep that short.
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "log.cleaner.threads": "1",
            "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        }
        config.update(extra)
        return config

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not installed (Kafka needs Java 17+)")
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms64m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Xss512k",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_path}",
            "-cp",
            str(self.home / "libs" / "*"),
            main,
            *args,
        ]

    def _write_files(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in self.config.items()))
        self.log4j_path.write_text(_LOG4J2)

    def _format(self) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        argv = self._java(
            _storage_tool_class(self.home / "libs"),
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(self.config_path),
            "--ignore-formatted",
        )
        try:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"kafka storage format timed out: {argv}") from exc
        out = (done.stdout + done.stderr).decode("utf-8", "replace")
        with self.log_path.open("a") as log:
            log.write(f"==== storage format: {argv}\n{out}\n")
        if done.returncode != 0:
            tail = "\n".join(out.splitlines()[-30:])
            raise RuntimeError(f"kafka storage format failed ({done.returncode}):\n{tail}")

    def spawn(self) -> None:
        """Write the config, format the storage on first use and launch the JVM (no waiting)."""
        self._write_files()
        self._format()
        self.process.spawn(
            self._java("kafka.Kafka", str(self.config_path)),
            cwd=self.work_dir,
            env={**os.environ, "LOG_DIR": str(self.work_dir)},
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        self.process.wait_until(
            lambda: _api_versions_ok(HOST, self.port),
            self.start_timeout if timeout is None else timeout,
            f"answering Kafka requests on {self.bootstrap}",
        )


def start_kafka(
    work_dir: Path,
    *,
    config: Mapping[str, str] | None = None,
    heap: str = "512m",
    start_timeout: float = KAFKA_START_TIMEOUT,
) -> KafkaBroker:
    """Fetch Kafka if needed, start one KRaft node on free loopback ports and wait until it
    answers. `config` adds to or overrides server.properties."""
    home = fetch_kafka()
    port = free_port()
    controller_port = free_port(frozenset({port}))
    broker = KafkaBroker(
        work_dir,
        home=home,
        port=port,
        controller_port=controller_port,
        config=config,
        heap=heap,
        start_timeout=start_timeout,
    )
    broker.start()
    return broker


# --------------------------------------------------------------------------------------------
# S3 (moto)


def _http_answers(host: str, port: int, timeout: float = 2.0) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/moto-api/")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True


def _moto_argv() -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "moto.server"]


class S3Server(_Service):
    """moto's server (all in memory) on 127.0.0.1; S3 at `endpoint`, any credentials."""

    access_key = "test"
    secret_key = "test"
    region = "us-east-1"

    def __init__(
        self, work_dir: Path, *, port: int, start_timeout: float = MOTO_START_TIMEOUT
    ) -> None:
        self.work_dir = work_dir
        self.port = port
        self.start_timeout = start_timeout
        self.process = ServiceProcess("moto_server", work_dir / "moto.log")

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def spawn(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }
        self.process.spawn(
            [*_moto_argv(), "-H", HOST, "-p", str(self.port)], cwd=self.work_dir, env=env
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        self.process.wait_until(
            lambda: _http_answers(HOST, self.port),
            self.start_timeout if timeout is None else timeout,
            f"answering HTTP on {self.endpoint}",
        )


def start_moto(work_dir: Path, *, start_timeout: float = MOTO_START_TIMEOUT) -> S3Server:
    """Start moto_server on a free loopback port and wait until it answers HTTP."""
    server = S3Server(work_dir, port=free_port(), start_timeout=start_timeout)
    server.start()
    return server
