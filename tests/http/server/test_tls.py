"""azuld's HTTP server (azuld.http.server) on a real socket: TLS, and a port in use.

Spoken to in raw bytes: each test runs a server on 127.0.0.1:0 with the small ASGI app of
`harness.py` (one route per behaviour) and checks the framing byte for byte where it matters.
Timeouts are a few tenths of a second so the timeout tests stay fast; every test is bounded by
`trio.fail_after`.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from azuld.http.server import ServerConfig, ssl_context
from tests.http.server.harness import BOTH, SERVERS, App, Client, Running, start


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azuld test")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@BOTH
async def test_tls(
    nursery: trio.Nursery, app: App, kind: str, certificate: tuple[Path, Path]
) -> None:
    certfile, keyfile = certificate
    client_context = ssl.create_default_context(cafile=str(certfile))
    client_context.set_alpn_protocols(["h2", "http/1.1"])
    server = await start(
        nursery,
        app,
        ssl_client=client_context,
        kind=kind,
        ssl_context=ssl_context(str(certfile), str(keyfile)),
    )
    assert server.urls == [f"https://127.0.0.1:{server.port}"]
    with trio.fail_after(5):
        async with server.connect() as client:
            for _ in range(2):  # keep-alive over TLS too
                await client.request("GET", "/scope")
                shown = json.loads((await client.response()).body)
                assert (shown["scheme"], shown["path"]) == ("https", "/scope")
            assert isinstance(client.stream, trio.SSLStream)
            assert client.stream.selected_alpn_protocol() == "http/1.1"
            assert shown["client"][0] == "127.0.0.1"


@BOTH
async def test_plain_http_to_a_tls_port_does_not_stop_the_server(
    nursery: trio.Nursery, app: App, kind: str, certificate: tuple[Path, Path]
) -> None:
    certfile, keyfile = certificate
    server = await start(
        nursery,
        app,
        ssl_client=ssl.create_default_context(cafile=str(certfile)),
        kind=kind,
        ssl_context=ssl_context(str(certfile), str(keyfile)),
    )
    with trio.fail_after(5):
        plain = Client(await trio.open_tcp_stream("127.0.0.1", server.port))
        async with plain:
            await plain.request("GET", "/scope")
            await plain.read_to_eof()
        async with server.connect() as client:
            await client.request("GET", "/scope")
            assert json.loads((await client.response()).body)["scheme"] == "https"


async def test_hypercorn_speaks_http_2_over_tls(
    nursery: trio.Nursery, app: App, certificate: tuple[Path, Path]
) -> None:
    """ALPN chose h2: hypercorn's, passed through unread."""
    certfile, keyfile = certificate
    client_context = ssl.create_default_context(cafile=str(certfile))
    client_context.set_alpn_protocols(["h2"])
    server = await start(
        nursery,
        app,
        ssl_client=client_context,
        kind="hypercorn",
        ssl_context=ssl_context(str(certfile), str(keyfile), ("h2", "http/1.1")),
    )
    with trio.fail_after(5):
        async with server.connect() as client:
            await client.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            frame = await client.read_exactly(9)
            assert isinstance(client.stream, trio.SSLStream)
            assert client.stream.selected_alpn_protocol() == "h2"
            assert frame[3] == 0x04  # the server's SETTINGS frame


@BOTH
async def test_address_in_use_raises_os_error(server: Running, kind: str) -> None:
    app = App()
    with trio.fail_after(5), pytest.raises(OSError, match="in use"):
        await SERVERS[kind](app, ServerConfig(f"127.0.0.1:{server.port}"), shutdown=trio.Event())
