"""The Unbox plugin on archives built in the test: every format, passwords, and each guard.

RAR cannot be written with anything Debian or PyPI ships, so the rar samples are small files
from rarfile's own test suite (ISC licence, (c) Marko Kreen), inlined as base64. Reading the
compressed and encrypted ones needs the `unar` tool (Debian package `unar`).
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import os
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import py7zr
import pytest
import pyzipper  # type: ignore[import-untyped]
import rarfile  # type: ignore[import-untyped]

from azuld.models.events import BinaryEvent, StatusEntity
from azuld.plugin import LocalDispatcher, PluginRunner, run_local
from azuld.plugin.local import local_event
from azuld.plugins.unbox import Limits, Unbox, extract, safe_member_path, sniff_container

MiB = 1024 * 1024
HELLO = b"hello from inside the archive\n" * 20
OTHER = b"another member, with other content\n" * 10


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def unbox(tmp_path: Path, data: bytes, name: str = "sample", **config: str) -> StatusEntity:
    path = tmp_path / name
    path.write_bytes(data)
    [status] = await run_local(Unbox(config), [path])
    return status.entity


def main_result(entity: StatusEntity) -> BinaryEvent:
    [result] = [r for r in entity.results if r.action in ("enriched", "augmented")]
    return result


def features(event: BinaryEvent, name: str) -> list[str]:
    return [f.value for f in event.entity.features if f.name == name]


def children(entity: StatusEntity) -> dict[str, str]:
    """{filename: sha256} of the extracted children."""
    found = {}
    for result in entity.results:
        if result.action == "extracted":
            node = result.source.path[-1]
            found[node.filename] = result.entity.sha256
    return found


def relationships(entity: StatusEntity) -> list[dict[str, str]]:
    return [r.source.path[-1].relationship for r in entity.results if r.action == "extracted"]


def skipped(entity: StatusEntity) -> list[str]:
    return features(main_result(entity), "archive_skipped")


def assert_completed(entity: StatusEntity) -> None:
    assert entity.status == "completed", (entity.error, entity.message)


def make_zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@dataclass
class RawEntry:
    """A zip entry for `raw_zip`: `payload` is already compressed (and encrypted)."""

    name: str
    method: int
    payload: bytes
    crc: int
    size: int
    flags: int = 0
    external_attr: int = 0
    create_system: int = 3


def raw_zip(entries: list[RawEntry]) -> bytes:
    """A zip written by hand, headers and all, so that they can lie."""
    out = io.BytesIO()
    central = []
    for entry in entries:
        name = entry.name.encode()
        offset = out.tell()
        fields = (entry.flags, entry.method, 0, 0x21, entry.crc, len(entry.payload), entry.size)
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, *fields, len(name), 0))
        out.write(name + entry.payload)
        made_by = (entry.create_system << 8) | 20
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                made_by,
                20,
                *fields,
                len(name),
                0,
                0,
                0,
                0,
                entry.external_attr,
                offset,
            )
            + name
        )
    start = out.tell()
    for record in central:
        out.write(record)
    size = out.tell() - start
    count = len(central)
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, start, 0))
    return out.getvalue()


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def zeros_deflate(mib: int, prefix: bytes = b"") -> tuple[bytes, int]:
    """A raw deflate stream of `prefix` then `mib` MiB of zeros, built without compressing them
    all: after a full flush the compressor's output for the next MiB of zeros is always the
    same bytes. Returns (stream, crc32)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_FULL_FLUSH) if prefix else b""
    zero = bytes(MiB)
    block = compressor.compress(zero) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(prefix)
    for _ in range(mib):
        crc = zlib.crc32(zero, crc)
    return head + block * mib + compressor.flush(), crc


def gzip_wrap(stream: bytes, crc: int, size: int) -> bytes:
    return (
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03" + stream + struct.pack("<2L", crc, size % 2**32)
    )


def _crc_byte(crc: int, byte: int) -> int:
    return zlib.crc32(bytes([byte]), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def zipcrypto(data: bytes, password: bytes, crc: int) -> bytes:
    """PKWARE traditional encryption of `data` (with its 12-byte header)."""
    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(byte: int) -> None:
        keys[0] = _crc_byte(keys[0], byte)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = _crc_byte(keys[2], keys[1] >> 24)

    for byte in password:
        update(byte)
    out = bytearray()
    for byte in os.urandom(11) + bytes([crc >> 24]) + data:
        temp = (keys[2] | 2) & 0xFFFF
        out.append(byte ^ (((temp * (temp ^ 1)) >> 8) & 0xFF))
        update(byte)
    return bytes(out)


def aes_zip(members: dict[str, bytes], password: bytes) -> bytes:
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(
        buffer, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(password)
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def make_tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def make_7z(members: dict[str, bytes], password: str | None = None, headers: bool = False) -> bytes:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password=password, header_encryption=headers) as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return buffer.getvalue()


# From rarfile's test suite: two 2048-byte members, RAR3 solid compression.
RAR3_SOLID = base64.b64decode(
    "UmFyIRoHADvQcwgADQAAAAAAAAArNHSAkCwAXAAAAAAIAAADoua3xbBmzD4dMwoApIEAAHN0ZXN0MS50eHQAwBEMzP6MnrD+"
    "MYGrrLG7QHeoCmTWSzeDwQe8AeCFku77th0ACCAACIjpeAzSDAdhOkF4S7Nun1IK2sonQLrnC2SKYnH7uACRnlAv2FX/+sZY"
    "6+vE14h+VJaHH03s2RZ0kJAsAA4AAAAACAAAA6Lmt8WwZsw+HTMKAKSBAABzdGVzdDIudHh0AMCxIACIB+vyCmn6/JTe0MQ9"
    "ewBABwA="
)
# RAR5, both members AES-encrypted with the password "password".
RAR5_PASSWORD = base64.b64decode(
    "UmFyIRoHAQDz4YLrCwEFBwAGAQGAgIAA1maebhMDAp8ABJ8AACJDfqmAAAEDQ01UUkFSNSBhcmNoaXZlIC0gbm9oZHItcGFz"
    "c3dvcmQKAJib2Y5ZAgM8wAAEgBCkgwLq7ii6gAMBCnN0ZXN0MS50eHQwAQADD36YLN0a4hw2x6OR2o0IimigOq0m9IJ7h9VM"
    "clznO2lngVHP9jZJwW4YaiIPCgMCgMwgl+YozAFvXOSKu4lkW22a9BUVMg/KTEgfLmj8fkUbh1+PPsmRIRwPkcBeDl2ssikA"
    "olPsTaFiZXO/K9VBSFSBmxJSN991gzr80GkCA0yAEASAEKSDAuruKLqAAAEKc3Rlc3QyLnR4dDABAAMPfpgs3RriHDbHo5Ha"
    "jQiKaN+D+gzYboi4tvhRRn15SdKBUc/2NknBbhhqIg8aAw6AzCCX5ijMAYAW4xIKtNEBgHBFFQq00QFJ0Rg4cbziZUNXpSVo"
    "dpqNzcGF0zApOoi/Z5yIDtqpYBOczY75rzda9tBj5Od7CS8YnvyhckMbjxGbfkhAf1GRHQwF0y9hsZFUbS8EHWH+5o7FCxNw"
    "CK92rTKdNZuqGodC3zEs9e0p2yrfgMQKXLwS7ZkG+YMxbzwlfYN6vXc1Z4yFdcxDDnmeyIHG7JNoxlawEtgiQfDFhMbAysxI"
    "ayz63U+peiDhZqsSjG8D/CRYIuACxZdPD9/h4teHcvCHfdwGm8em2c1w+kHIB/iwwTlbijb7yOxf9yRBkQoFh5aIu3NCObwS"
    "cRaTN2Gut668RyCCDtfnBgvxekMV37ehVaekm5v/HyCIxXS2Y3vRbSDSKxgTA1HFZwxORH8OSJF0wank9IRhcdXr9PmEUn7l"
    "u4LID1rXyx5EbBaFyR7ngT9AkgQx7cwt2yFJKgx8y1Z9/3vXNNKDQmBdZxD6G+JD+oycEbitAFp6rZMxD5zAyaQSCTmDYOoH"
    "6Lfx+V5jsxINOndMhvJCBeYmJx5PlGXaThkhEIYKuV3zi2qLG1jT5cZ7KfjA7iPTiWo7o/Fx1p0QmuXRelJtvYhUXanI9F+7"
    "O3Nu47ZSqrYNqRuNAIDDiI50kGR4O2cSU7ea/PZ8qiHRgR53QL3gs+jgL78ELlJTuQQjRP3P7rekaqNwIE21YacQ79V9xTnt"
    "LUq0s+BAnCVV8t6GpmhqWCqvAdSb/Fdu0ot8pHQZ1wmbK5khx7RvaSyq/Ct5UTutp+QLVckbf0ZQ1Bm1wmo5rav72fL0cypx"
    "wmSi1fpQwgZ97fKvCZ5b7umuE6a7Bh7i1KBp6bPdy8n4nWfDoWPyJlNbNiaJBHrVX6YniBDgb3WMswOKxLRRAu1yhRaaWlPW"
    "UN1EL3MrnmatY9BHskzD/lP66MhOgZnLbCGOKf8e1PGqsrb+QbJEbLpq0MmFPCSxT+GDnM7XLEmJguKZBfovXcMYtjJPwg0R"
    "7Yq1CASsVf/c339fal72x8k2Bgjy/M5zwiMjq7CxjDFVePxHQh7a2pbr1LpeDRR1jhCTizLPhebjUMOnDKUr2zODHLMJrUkx"
    "Da3QN1d9UIgDKoMr3kVTB+SWgDhOVHAM0WMX1XSxojDgIr2vRAr4wdKSZ7y7UnCHBSR9HRekf5KlshYMmKLwrYCCR6UJYpcy"
    "h/hsel0jDQgedzUWPbDcAPC+BCknbd7OZDUP95q9LgQhJ3QInJNTNrvpXyakWiKnX/YLWKukxe+zNLaYIJQ6xBABFI0LqsLa"
    "4S7KCWBcgT4mgt7rOUEeTvkOxk8oEJN8ViA436kZR0YsRR3CRTcYCHxkO2nZNOvon9o/j3kf27DwAjXDWRIrEW23UL6Hk35Z"
    "1kX/zPVzwhEE3Rj4xixro2xexLA2gGGopH2hgOK3yOemXRseVRpdpucqanE6ojKjO4rzThknQgT9vXkIwSUP0D47LG87UR5L"
    "mceFYjiH/26lQBmjOkJIJ+NompoSQ2PgRXohMwqbwa252zEIIVMwmj8jkchR+Bi+CgjqsApAXgebIGy0fAORu9DcLNWaVEWF"
    "FyYmfmaHt9v87O8SyppS6BKZZuhY1nJ41O2HnHSVFXg852Snbiz7JQyOWlK4mPK+m2UjsSCqEhQCGmMTgGNfHwBuo8a6PTH1"
    "Y0PDgBa9Q/9MXvfMrKNRj/mic71/5aOaqZoHzKMgjpHwJTliO+MmX/IDLTA2C9ixFBiZfnO0N8iy/YxASNV1V0wlvHDLgh4d"
    "djP16vNhN4el1XGkLIkdWTinE2mJ1tn8Rg2Lk2yKd52WPiFzqqf9QdqeqFSoezHSjhhNAyXZIsuRPxmGKdByG2qGPIyZP3E+"
    "JKwg0f+ni59LGQ+kTUNnTvG0uAoA166bYQQzTOM4Bifd0DNvZb1COilHKkD4uXAy2UbD4Fn+JC6cvSXY/Icuhl4MaIgPDzFJ"
    "Ts1tVhbSW3CQ7W4NWRszSW6nVwXZ5C6uuLbhQ1tgV9UTHUh2O8jaIRdh++SAhFh6D2CLh2Wl9y1CbSigqe1dXfg3bsVd5a3f"
    "hVYr3szvn5vVDBuzJhxfWzKnNg3EI/FStxg5CLQPRC/fZlE8yfbBzP2LmGD1EUXybTUWzzG20Wjy07vvFzjz13o0bsS1BzfJ"
    "e29CfQeMoF0997VJpIhrT2MxYeWM0tBYPBOER3dwn4tBO7CkwfvTgI+OsqjHTl/A7Ac7VamthyVeuVyr7+JSlv3m9SHjX1Sa"
    "RFdHxt8k0R/oLQDnO69s4Qot0TqkaNdQYGhfv06rf3RiCCWjv50BF46+dDyoJVUy2qlarbbq/8njB882jXDHhF02mj5KHMvI"
    "cFTlDSr464r3tOmPGXf08aZwgqhHf8KQVvzLg+BQerTOOxPKAB6p9hmtTt0NOaYKQTRp7mNkxACZVj0i06WLrN8RTdT9Kdh+"
    "SoE/7SVhejXh3+Xe5uu19BDGLaqfcTRao6OP5FXDYROHoGSIWTDOpYn5AxyWxE+FJqlDWjvmUNuqvgVSvWcX3dRcC4Hb4B/a"
    "EpEi65AqFt8IayCVDvxtgmdnVMNOt0n3N/PHu+fld3v4QlhwUtwHTMnKakcvdwTY3zdo4564CizImbpTgwQ7hEcfyxe7qHGY"
    "p/Fbj5C5m5AAqfw+R7bmskrZwBvghzPVZxWOo30Pu9uT9l39iiPhiHQxRH6hNRkWQ1dmI1YEB4h1YTz23+Ma8bd2LsZ0xwTL"
    "GpG1WdcKJBcrBlJh45vKsL+6Qh13VlEDBQQA"
)
# RAR5: data_link -> data.txt, data.txt ("data\n"), random_link -> ../random123.
RAR5_SYMLINKS = base64.b64decode(
    "UmFyIRoHAQAzkrXlCgEFBgAFAQGAgABuR35XMgIDGAAECP/DAgAAAACAQAEJZGF0YV9saW5rCgMTBuQdXzlDegcMBQEACGRh"
    "dGEudHh0/Yr6ESYCAwuFAASFALSDAoLFweaAQAEIZGF0YS50eHQKAxPt4x1f8MPfIWRhdGEKXgUHFDgCAxwABAz/wwIAAAAA"
    "gEABC3JhbmRvbV9saW5rCgMTSOgdX2WpcDUQBQEADC4uL3JhbmRvbTEyMx13VlEDBQQA"
)
# RAR5: stest1.txt, and stest2.txt / stest3.txt as hardlinks to it.
RAR5_HARDLINKS = base64.b64decode(
    "UmFyIRoHAQDz4YLrCwEFBwAGAQGAgIAAYRz1tiACArcABoAQtIMCnYz0TaLmt8WAAwEKc3Rlc3QxLnR4dMSqNEQ0JPoy60f6"
    "xE19veYFgIIKjMEDKpXKIptQGpPdQPwAQAIA1GAENu0V+bdUgypkTs18H+C32RN0MAIDD4AABoAQtIMCnYz0TQAAAACAAAEK"
    "c3Rlc3QyLnR4dA4FBAAKc3Rlc3QxLnR4dPHidBEwAgMPgAAGgBC0gwKdjPRNAAAAAIAAAQpzdGVzdDMudHh0DgUEAApzdGVz"
    "dDEudHh0HXdWUQMFBAA="
)
# The content of every stestN.txt in rarfile's samples: "000\n" .. "511\n".
STEST = "".join(f"{i:03d}\n" for i in range(512)).encode()


# --------------------------------------------------------------------------- #
# Pure helpers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.txt", ("a/b.txt", "")),
        ("./a//b.txt", ("a/b.txt", "")),
        ("a\\b.txt", ("a/b.txt", "")),
        ("../evil", ("", "path traversal")),
        ("a/../../evil", ("", "path traversal")),
        ("..\\evil", ("", "path traversal")),
        ("/etc/passwd", ("", "absolute path")),
        ("\\\\host\\share\\x", ("", "absolute path")),
        ("C:\\Windows\\x.dll", ("", "absolute path")),
        ("a\x00b", ("", "nul byte in name")),
        ("./", ("", "empty name")),
    ],
)
def test_safe_member_path(name: str, expected: tuple[str, str]) -> None:
    assert safe_member_path(name) == expected


def test_limits_from_config() -> None:
    limits = Limits.from_config({"passwords": " a, b ,,c", "max_members": "7", "max_ratio": "2.5"})
    assert limits.passwords == ("a", "b", "c")
    assert (limits.max_members, limits.max_ratio, limits.max_depth) == (7, 2.5, 5)
    assert Limits.from_config({}).passwords == ("infected", "malware", "virus", "password")
    with pytest.raises(ValueError, match="positive"):
        Limits.from_config({"max_total_bytes": "0"})
    with pytest.raises(ValueError, match="max_members='lots': not a number"):
        Unbox({"max_members": "lots"})


def test_every_supported_format_is_identified_as_archive() -> None:
    from azuld.identify import identify_bytes

    samples = {
        "archive/zip": make_zip({"a.txt": HELLO}),
        "archive/tar": make_tar([("a.txt", HELLO)]),
        "archive/gzip": make_tar([("a.txt", HELLO)], "w:gz"),
        "archive/bzip2": bz2.compress(HELLO),
        "archive/xz": lzma.compress(HELLO),
        "archive/lzma": lzma.compress(HELLO, format=lzma.FORMAT_ALONE),
        "archive/7-zip": make_7z({"a.txt": HELLO}),
        "archive/rar": RAR3_SOLID,
    }
    for fmt, data in samples.items():
        assert identify_bytes(data).file_format == fmt
        assert sniff_container(data, fmt) is not None
    assert Unbox.filters.data_types["content"] == (
        "archive/zip",
        "archive/tar",
        "archive/gzip",
        "archive/bzip2",
        "archive/xz",
        "archive/lzma",
        "archive/7-zip",
        "archive/rar",
    )


# --------------------------------------------------------------------------- #
# Happy paths
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "compression",
    [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA],
)
async def test_zip(tmp_path: Path, compression: int) -> None:
    data = make_zip({"dir/": b"", "dir/a.txt": HELLO, "b.bin": OTHER}, compression=compression)
    entity = await unbox(tmp_path, data, "sample.zip")
    assert_completed(entity)
    assert children(entity) == {"dir/a.txt": sha(HELLO), "b.bin": sha(OTHER)}
    assert relationships(entity)[0] == {"action": "extracted", "container": "zip"}
    main = main_result(entity)
    assert features(main, "archive_member_count") == ["3"]
    assert features(main, "archive_skipped") == []
    assert main.entity.info["extracted"] == 2


async def test_zipcrypto_with_default_password(tmp_path: Path) -> None:
    crc = zlib.crc32(HELLO)
    payload = zipcrypto(deflate(HELLO), b"infected", crc)
    data = raw_zip([RawEntry("secret.txt", 8, payload, crc, len(HELLO), flags=1)])
    entity = await unbox(tmp_path, data, "sample.zip")
    assert_completed(entity)
    assert children(entity) == {"secret.txt": sha(HELLO)}
    assert features(main_result(entity), "archive_password") == ["infected"]
    assert relationships(entity)[0]["password"] == "infected"


async def test_aes_zip_with_default_password(tmp_path: Path) -> None:
    data = aes_zip({"a.txt": HELLO, "b/c.txt": OTHER}, b"infected")
    entity = await unbox(tmp_path, data, "sample.zip")
    assert_completed(entity)
    assert children(entity) == {"a.txt": sha(HELLO), "b/c.txt": sha(OTHER)}
    assert features(main_result(entity), "archive_password") == ["infected"]


async def test_aes_zip_with_a_configured_password(tmp_path: Path) -> None:
    data = aes_zip({"a.txt": HELLO}, b"s3cret")
    entity = await unbox(tmp_path, data, "sample.zip", passwords="nope,s3cret")
    assert_completed(entity)
    assert features(main_result(entity), "archive_password") == ["s3cret"]


@pytest.mark.parametrize(
    ("mode", "compression"), [("w", ""), ("w:gz", "gzip"), ("w:bz2", "bzip2"), ("w:xz", "xz")]
)
async def test_tar(tmp_path: Path, mode: str, compression: str) -> None:
    data = make_tar(
        [tar_entry("dir", tarfile.DIRTYPE), ("dir/a.txt", HELLO), ("b.bin", OTHER)], mode
    )
    entity = await unbox(tmp_path, data, "sample.tar")
    assert_completed(entity)
    assert children(entity) == {"dir/a.txt": sha(HELLO), "b.bin": sha(OTHER)}
    expected = {"action": "extracted", "container": "tar"}
    if compression:
        expected["compression"] = compression
    assert relationships(entity)[0] == expected
    assert features(main_result(entity), "archive_member_count") == ["3"]


async def test_gzip_uses_the_stored_name(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="original.exe", mode="wb", fileobj=buffer) as stream:
        stream.write(HELLO)
    entity = await unbox(tmp_path, buffer.getvalue(), "download.bin")
    assert_completed(entity)
    assert children(entity) == {"original.exe": sha(HELLO)}
    assert relationships(entity) == [{"action": "extracted", "container": "gzip"}]


@pytest.mark.parametrize(
    ("compress", "container"),
    [
        (gzip.compress, "gzip"),
        (bz2.compress, "bzip2"),
        (lzma.compress, "xz"),
        (lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE), "lzma"),
    ],
)
async def test_single_streams_strip_the_suffix(
    tmp_path: Path, compress: Callable[[bytes], bytes], container: str
) -> None:
    data = compress(HELLO)
    entity = await unbox(tmp_path, data, "payload.js.gz")
    assert_completed(entity)
    assert children(entity) == {"payload.js": sha(HELLO)}
    assert relationships(entity) == [{"action": "extracted", "container": container}]
    assert features(main_result(entity), "archive_member_count") == ["1"]


@pytest.mark.parametrize(
    ("password", "headers"), [(None, False), ("infected", False), ("infected", True)]
)
async def test_7z(tmp_path: Path, password: str | None, headers: bool) -> None:
    data = make_7z({"a.txt": HELLO, "dir/b.bin": OTHER}, password, headers)
    entity = await unbox(tmp_path, data, "sample.7z")
    assert_completed(entity)
    assert children(entity) == {"a.txt": sha(HELLO), "dir/b.bin": sha(OTHER)}
    assert features(main_result(entity), "archive_password") == ([password] if password else [])
    assert relationships(entity)[0]["container"] == "7z"


async def test_rar_compressed(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, RAR3_SOLID, "sample.rar")
    assert_completed(entity)
    assert children(entity) == {"stest1.txt": sha(STEST), "stest2.txt": sha(STEST)}
    assert relationships(entity)[0] == {"action": "extracted", "container": "rar"}


async def test_rar_encrypted_with_a_default_password(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, RAR5_PASSWORD, "sample.rar")
    assert_completed(entity)
    assert children(entity) == {"stest1.txt": sha(STEST), "stest2.txt": sha(STEST)}
    assert features(main_result(entity), "archive_password") == ["password"]


# --------------------------------------------------------------------------- #
# Passwords and damage
# --------------------------------------------------------------------------- #


async def test_aes_zip_with_an_unknown_password_opts_out(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, aes_zip({"a.txt": HELLO}, b"not-in-the-list"), "sample.zip")
    assert entity.status == "opt-out"
    assert entity.error == "password-required"
    assert "infected" in entity.message
    assert entity.results == []


async def test_zipcrypto_with_an_unknown_password_opts_out(tmp_path: Path) -> None:
    crc = zlib.crc32(HELLO)
    payload = zipcrypto(deflate(HELLO), b"not-in-the-list", crc)
    data = raw_zip([RawEntry("a.txt", 8, payload, crc, len(HELLO), flags=1)])
    entity = await unbox(tmp_path, data, "sample.zip")
    assert (entity.status, entity.error) == ("opt-out", "password-required")


async def test_unknown_password_beside_plain_members_is_reported(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with pyzipper.AESZipFile(buffer, "w", compression=pyzipper.ZIP_DEFLATED) as archive:
        archive.writestr("plain.txt", OTHER)
        archive.setpassword(b"not-in-the-list")
        archive.setencryption(pyzipper.WZ_AES)
        archive.writestr("secret.txt", HELLO)
    entity = await unbox(tmp_path, buffer.getvalue(), "sample.zip")
    assert_completed(entity)
    assert children(entity) == {"plain.txt": sha(OTHER)}
    assert skipped(entity) == ["secret.txt: password-required"]


async def test_7z_with_an_unknown_password_opts_out(tmp_path: Path) -> None:
    for headers in (False, True):
        data = make_7z({"a.txt": HELLO}, "not-in-the-list", headers)
        entity = await unbox(tmp_path, data, "sample.7z", passwords="nope,wrong")
        assert (entity.status, entity.error) == ("opt-out", "password-required")


async def test_rar_with_an_unknown_password_opts_out(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, RAR5_PASSWORD, "sample.rar", passwords="nope,wrong")
    assert (entity.status, entity.error) == ("opt-out", "password-required")
    assert "nope, wrong" in entity.message


@pytest.mark.parametrize(
    ("data", "container"),
    [
        (b"PK\x03\x04" + b"\x00" * 100, "zip"),
        (make_zip({"a.txt": HELLO})[:-30], "zip"),
        (gzip.compress(HELLO * 50)[:-40], "gzip"),
        (b"BZh9" + b"garbage" * 10, "bzip2"),
        (b"\xfd7zXZ\x00" + b"garbage" * 10, "xz"),
        (make_7z({"a.txt": HELLO})[:40], "7z"),
        (b"Rar!\x1a\x07\x01\x00" + b"\xff" * 40, "rar"),
        (make_tar([("a.txt", HELLO)])[:700], "tar"),
    ],
)
async def test_corrupt_archives_opt_out(tmp_path: Path, data: bytes, container: str) -> None:
    entity = await unbox(tmp_path, data, "sample")
    assert (entity.status, entity.error) == ("opt-out", "corrupt-archive"), entity.message
    assert container in entity.message


async def test_corrupt_member_beside_good_ones_is_malformed(tmp_path: Path) -> None:
    data = bytearray(make_zip({"good.txt": OTHER, "bad.txt": HELLO}))
    at = data.index(HELLO)  # stored: flip a byte of the second member's data
    data[at] ^= 0xFF
    entity = await unbox(tmp_path, bytes(data), "sample.zip")
    assert_completed(entity)
    assert children(entity) == {"good.txt": sha(OTHER)}
    [reason] = skipped(entity)
    assert reason.startswith("bad.txt: corrupt: BadZipFile")
    assert features(main_result(entity), "malformed") == ["zip member data is corrupt"]


async def test_truncated_tar_keeps_what_came_before(tmp_path: Path) -> None:
    data = make_tar([("a.txt", HELLO), ("b.txt", OTHER * 20)])
    entity = await unbox(tmp_path, data[:2048], "sample.tar")
    assert_completed(entity)
    assert children(entity) == {"a.txt": sha(HELLO)}
    assert skipped(entity) == ["b.txt: corrupt: unexpected end of data"]
    assert features(main_result(entity), "malformed")[0].startswith("truncated or corrupt tar")


async def test_not_an_archive_opts_out(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, b"just some text\n" * 10, "notes.txt")
    assert (entity.status, entity.error) == ("opt-out", "unsupported-format")


# --------------------------------------------------------------------------- #
# Guards
# --------------------------------------------------------------------------- #


async def test_max_depth_opts_out(tmp_path: Path) -> None:
    data = make_zip({"a.txt": HELLO})
    dispatcher = LocalDispatcher()
    runner = PluginRunner(Unbox(), dispatcher)
    stream = await dispatcher.upload("local", "content", data)
    event = local_event(stream, "nested.zip")
    event.source.path = [event.source.path[0]] * 5
    await runner.run_job(event)
    [status] = dispatcher.statuses
    assert (status.entity.status, status.entity.error) == ("opt-out", "max-depth")
    assert "5 deep" in status.entity.message
    # One level less is still unpacked.
    event.source.path = event.source.path[:4]
    await runner.run_job(event)
    assert dispatcher.statuses[1].entity.status == "completed"


async def test_ten_thousand_members_are_truncated(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index in range(10_000):
            archive.writestr(f"m/{index:05d}.txt", HELLO)
    entity = await unbox(tmp_path, buffer.getvalue(), "many.zip")
    assert_completed(entity)
    assert len(children(entity)) == 1000
    assert "m/00999.txt" in children(entity)
    main = main_result(entity)
    assert features(main, "archive_member_count") == ["10000"]
    [truncated] = features(main, "archive_truncated")
    assert truncated == "9000 of 10000 entries not processed: over max_members (1000)"
    assert main.entity.info["truncated"] == truncated


async def test_tar_over_max_members_is_truncated(tmp_path: Path) -> None:
    data = make_tar([(f"{index}.txt", b"%d\n" % index) for index in range(30)], "w:gz")
    entity = await unbox(tmp_path, data, "many.tgz", max_members="10")
    assert_completed(entity)
    assert len(children(entity)) == 10
    main = main_result(entity)
    assert features(main, "archive_member_count") == ["11"]
    assert main.entity.info["member_count_exact"] is False
    assert features(main, "archive_truncated")[0].startswith("more than max_members (10)")


async def test_zip_directory_far_over_max_members_is_not_parsed(tmp_path: Path) -> None:
    data = make_zip({f"{index}.txt": b"x" for index in range(120)})
    entity = await unbox(tmp_path, data, "many.zip", max_members="1")
    assert (entity.status, entity.error) == ("opt-out", "too-many-members")


async def test_zip_ratio_bomb_is_stopped_while_streaming(tmp_path: Path) -> None:
    # 90 MiB of zeros (under max_member_bytes) in ~90 KiB: about 1000:1.
    stream, crc = zeros_deflate(90)
    data = raw_zip(
        [
            RawEntry("bomb.bin", 8, stream, crc, 90 * MiB),
            RawEntry("ok.txt", 8, deflate(HELLO), zlib.crc32(HELLO), len(HELLO)),
        ]
    )
    assert len(data) < MiB
    entity = await unbox(tmp_path, data, "bomb.zip")
    assert_completed(entity)
    assert children(entity) == {"ok.txt": sha(HELLO)}
    [reason] = skipped(entity)
    assert reason.startswith("bomb.bin: compression ratio over max_ratio 100:1")
    assert main_result(entity).entity.info["extracted_bytes"] == len(HELLO)


async def test_zip_header_that_understates_the_size_is_not_trusted(tmp_path: Path) -> None:
    stream, crc = zeros_deflate(5)
    data = raw_zip([RawEntry("liar.bin", 8, stream, crc, 1000)])  # 5 MiB, says 1000 bytes
    entity = await unbox(tmp_path, data, "liar.zip")
    assert_completed(entity)
    assert children(entity) == {}
    [reason] = skipped(entity)
    assert reason.startswith("liar.bin: corrupt")


async def test_gzip_ratio_bomb_of_200_mib(tmp_path: Path) -> None:
    stream, crc = zeros_deflate(200)
    data = gzip_wrap(stream, crc, 200 * MiB)
    entity = await unbox(tmp_path, data, "zeros.bin.gz")
    assert_completed(entity)
    assert children(entity) == {}
    [reason] = skipped(entity)
    assert reason.startswith("zeros.bin: compression ratio over max_ratio 100:1")


async def test_tar_gz_ratio_bomb_stops_the_stream(tmp_path: Path) -> None:
    info = tarfile.TarInfo("zeros.bin")
    info.size = 90 * MiB
    stream, crc = zeros_deflate(91, prefix=info.tobuf())  # member data, then the end blocks
    data = gzip_wrap(stream, crc, 512 + 91 * MiB)
    entity = await unbox(tmp_path, data, "bomb.tar.gz")
    assert_completed(entity)
    assert children(entity) == {}
    [reason] = skipped(entity)
    assert reason.startswith("zeros.bin: compression ratio of the stream over max_ratio 100:1")
    assert features(main_result(entity), "archive_truncated")[0].startswith("compression ratio")


async def test_7z_ratio_bomb_is_dropped(tmp_path: Path) -> None:
    data = make_7z({"zeros.bin": bytes(20 * MiB), "ok.txt": HELLO})
    entity = await unbox(tmp_path, data, "bomb.7z")
    assert_completed(entity)
    assert children(entity) == {"ok.txt": sha(HELLO)}
    [reason] = skipped(entity)
    assert reason.startswith("zeros.bin: compression ratio over max_ratio 100:1")


async def test_max_member_bytes(tmp_path: Path) -> None:
    big = os.urandom(3000)
    for data, name in [
        (make_zip({"big.bin": big, "small.txt": b"small"}), "a.zip"),
        (make_tar([("big.bin", big), ("small.txt", b"small")], "w:gz"), "a.tgz"),
        (make_7z({"big.bin": big, "small.txt": b"small"}), "a.7z"),
    ]:
        entity = await unbox(tmp_path, data, name, max_member_bytes="2000")
        assert_completed(entity)
        assert children(entity) == {"small.txt": sha(b"small")}, name
        assert skipped(entity) == ["big.bin: header size 3000 over max_member_bytes (2000)"]
    # A stream has no header size: the guard trips while reading.
    entity = await unbox(tmp_path, gzip.compress(big), "big.bin.gz", max_member_bytes="2000")
    assert skipped(entity) == ["big.bin: larger than max_member_bytes (2000)"]


async def test_max_total_bytes_truncates(tmp_path: Path) -> None:
    members = {f"{index}.bin": os.urandom(1000) for index in range(5)}
    entity = await unbox(tmp_path, make_zip(members), "a.zip", max_total_bytes="2500")
    assert_completed(entity)
    assert sorted(children(entity)) == ["0.bin", "1.bin"]
    assert skipped(entity) == ["2.bin: max_total_bytes (2500) reached"]
    assert features(main_result(entity), "archive_truncated") == ["max_total_bytes (2500) reached"]


async def test_traversal_and_absolute_names_are_skipped(tmp_path: Path) -> None:
    zip_data = make_zip(
        {"../evil.txt": HELLO, "/etc/evil.txt": HELLO, "a/../../evil.txt": HELLO, "ok.txt": OTHER}
    )
    tar_data = make_tar([("../evil.txt", HELLO), ("/etc/evil.txt", HELLO), ("ok.txt", OTHER)])
    for data, name in [(zip_data, "a.zip"), (tar_data, "a.tar")]:
        entity = await unbox(tmp_path, data, name)
        assert_completed(entity)
        assert children(entity) == {"ok.txt": sha(OTHER)}
        reasons = skipped(entity)
        assert "../evil.txt: path traversal" in reasons
        assert "/etc/evil.txt: absolute path" in reasons
    assert not (tmp_path.parent / "evil.txt").exists()


async def test_links_and_devices_in_a_tar_are_not_followed(tmp_path: Path) -> None:
    data = make_tar(
        [
            ("real.txt", HELLO),
            tar_entry("sym", tarfile.SYMTYPE, "/etc/passwd"),
            tar_entry("hard", tarfile.LNKTYPE, "real.txt"),
            tar_entry("dev", tarfile.CHRTYPE),
            tar_entry("pipe", tarfile.FIFOTYPE),
        ]
    )
    entity = await unbox(tmp_path, data, "links.tar")
    assert_completed(entity)
    assert children(entity) == {"real.txt": sha(HELLO)}
    assert skipped(entity) == [
        "sym: symlink to '/etc/passwd' not followed",
        "hard: hardlink to 'real.txt' not followed",
        "dev: character device not extracted",
        "pipe: fifo not extracted",
    ]


async def test_symlink_in_a_zip_is_not_followed(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("ok.txt", OTHER)
    entity = await unbox(tmp_path, buffer.getvalue(), "links.zip")
    assert_completed(entity)
    assert children(entity) == {"ok.txt": sha(OTHER)}
    assert skipped(entity) == ["link: symlink not followed"]


async def test_links_in_a_rar_are_not_followed(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, RAR5_SYMLINKS, "links.rar")
    assert_completed(entity)
    assert children(entity) == {"data.txt": sha(b"data\n")}
    assert skipped(entity) == [
        "data_link: unix symlink to 'data.txt' not followed",
        "random_link: unix symlink to '../random123' not followed",
    ]
    entity = await unbox(tmp_path, RAR5_HARDLINKS, "hardlinks.rar")
    assert children(entity) == {"stest1.txt": sha(STEST)}
    assert skipped(entity) == [
        "stest2.txt: hardlink to 'stest1.txt' not followed",
        "stest3.txt: hardlink to 'stest1.txt' not followed",
    ]


async def test_empty_members_are_skipped(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, make_zip({"empty.txt": b"", "ok.txt": OTHER}), "a.zip")
    assert children(entity) == {"ok.txt": sha(OTHER)}
    assert skipped(entity) == ["empty.txt: empty"]


async def test_symlink_in_a_7z_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_bytes(HELLO)
    (tmp_path / "link").symlink_to("/etc/passwd")
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        archive.write(tmp_path / "real.txt", "real.txt")
        archive.write(tmp_path / "link", "link")
    entity = await unbox(tmp_path, buffer.getvalue(), "links.7z")
    assert_completed(entity)
    assert children(entity) == {"real.txt": sha(HELLO)}
    assert skipped(entity) == ["link: symlink not followed"]


async def test_rar_without_a_backend_opts_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tool(*args: object, **kwargs: object) -> None:
        raise rarfile.RarCannotExec("Cannot find working tool")

    monkeypatch.setattr(rarfile, "tool_setup", no_tool)
    entity = await unbox(tmp_path, RAR3_SOLID, "sample.rar")
    assert (entity.status, entity.error) == ("opt-out", "rar-backend-missing")
    assert "unar" in entity.message


def test_a_cancelled_extraction_stops_at_the_next_chunk() -> None:
    stop = threading.Event()
    stop.set()
    result = extract(make_zip({"a.txt": HELLO, "b.txt": OTHER}), "zip", Limits(), stop)
    assert result.members == []
    assert result.truncated == "cancelled"
