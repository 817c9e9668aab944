"""Unbox on every format: the pure helpers, sniffing, happy paths, passwords and damage."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import pyzipper  # type: ignore[import-untyped]

from azuld.identify import signature_format
from azuld.plugins.unbox import Limits, Unbox, safe_member_path, sniff_container
from tests.plugins.unbox.samples import (
    HELLO,
    OTHER,
    RAR3_SOLID,
    RAR5_PASSWORD,
    STEST,
    RawEntry,
    aes_zip,
    assert_completed,
    children,
    deflate,
    features,
    main_result,
    make_7z,
    make_tar,
    make_zip,
    raw_zip,
    relationships,
    sha,
    skipped,
    tar_entry,
    unbox,
    zipcrypto,
)

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


def _v7_tar() -> bytes:
    """A tar whose header has no "ustar" magic (checksum redone), as pre-POSIX tars were."""
    data = bytearray(make_tar([("a.txt", HELLO)]))
    data[257:265] = b"\0" * 8
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return bytes(data)


def test_the_container_comes_from_the_identify_magic_table() -> None:
    samples = {
        "zip": make_zip({"a.txt": HELLO}),
        "tar": make_tar([("a.txt", HELLO)]),
        "gzip": make_tar([("a.txt", HELLO)], "w:gz"),
        "bzip2": bz2.compress(HELLO),
        "xz": lzma.compress(HELLO),
        "7z": make_7z({"a.txt": HELLO}),
        "rar": RAR3_SOLID,
    }
    for container, data in samples.items():
        assert signature_format(data) is not None, container
        assert sniff_container(data, "text/plain") == container
    # No magic: a tar header whose checksum holds, or the event's file_format.
    assert signature_format(_v7_tar()) is None
    assert sniff_container(_v7_tar(), "unknown") == "tar"
    alone = lzma.compress(HELLO, format=lzma.FORMAT_ALONE)
    assert sniff_container(alone, "unknown") is None
    assert sniff_container(alone, "archive/lzma") == "lzma"


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


async def test_gzip_with_a_reserved_method_opts_out_as_corrupt(tmp_path: Path) -> None:
    # Not gzip by the magic table (method 8 only), gzip by libmagic: the event's file_format.
    entity = await unbox(tmp_path, b"\x1f\x8b\x00" + b"\0" * 40, "sample.gz")
    assert (entity.status, entity.error) == ("opt-out", "corrupt-archive"), entity.message
    assert "gzip" in entity.message


async def test_a_stream_member_name_made_of_dots_stays_a_safe_name(tmp_path: Path) -> None:
    entity = await unbox(tmp_path, gzip.compress(HELLO), "...gz")
    assert_completed(entity)
    assert children(entity) == {"...gz.decompressed": sha(HELLO)}
