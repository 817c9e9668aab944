"""Session fixtures for the real services (see tests/services.py).

    kafka_broker -> KafkaBroker: .bootstrap "127.0.0.1:P", .restart()/.arestart(), .kill(), ...
    s3_server    -> S3Server:    .endpoint "http://127.0.0.1:P", .access_key/.secret_key/.region

Each service starts on first use (Kafka's jars are fetched with Maven if the cache lacks them) and
stops at the end of the session. A service that cannot start fails the test (RuntimeError with its
log tail); it is never skipped. Tests that stop or kill a service must leave it running again (or
call `ensure_running()`), since the session shares it.

To use them from any test module, load this file as a plugin in tests/conftest.py:
    pytest_plugins = ["tests.conftest_services"]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import KafkaBroker, S3Server, start_kafka, start_moto


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    broker = start_kafka(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        yield server
    finally:
        server.stop()
