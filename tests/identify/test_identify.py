"""Tests for azuld.identify: hashing and Azul-style file type identification."""

from __future__ import annotations

import bz2
import concurrent.futures
import gzip
import hashlib
import io
import lzma
import random
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from azuld.identify import (
    IDENTIFY_VERSION,
    FileDigests,
    FileHasher,
    FileType,
    identify_bytes,
    identify_path,
    signature_format,
)

# --------------------------------------------------------------------------- #
# Sample builders
# --------------------------------------------------------------------------- #


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _ooxml(part_dir: str) -> bytes:
    return _zip(
        {
            "[Content_Types].xml": b'<?xml version="1.0"?><Types/>',
            "_rels/.rels": b'<?xml version="1.0"?><Relationships/>',
            "docProps/core.xml": b'<?xml version="1.0"?><coreProperties/>',
            f"{part_dir}/document.xml": b'<?xml version="1.0"?><document/>',
        }
    )


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        data = b"hello tar\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _pe(*, pe64: bool, dll: bool) -> bytes:
    """Minimal MZ + PE header with an (empty) optional header."""
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    opt_size = 0xF0 if pe64 else 0xE0
    machine = 0x8664 if pe64 else 0x014C
    characteristics = 0x0002 | (0x2000 if dll else 0) | (0 if pe64 else 0x0100)
    file_header = struct.pack("<HHIIIHH", machine, 0, 0, 0, 0, opt_size, characteristics)
    optional = bytearray(opt_size)
    struct.pack_into("<H", optional, 0, 0x20B if pe64 else 0x10B)
    return bytes(dos) + b"PE\0\0" + file_header + bytes(optional) + b"\0" * 256


def _elf(*, is64: bool, e_type: int, pie: bool = False) -> bytes:
    """ELF header plus one PT_DYNAMIC program header whose DT_FLAGS_1 may carry DF_1_PIE."""
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1, 1, 0]) + b"\0" * 8
    flags_1 = 0x08000000 if pie else 0
    if is64:
        ehsize, phentsize = 64, 56
        dyn_off = ehsize + phentsize
        header = struct.pack(
            "<HHIQQQIHHHHHH",
            e_type,
            0x3E,
            1,
            0x401000,
            ehsize,
            0,
            0,
            ehsize,
            phentsize,
            1,
            64,
            0,
            0,
        )
        dynamic = struct.pack("<qQqQ", 0x6FFFFFFB, flags_1, 0, 0)
        phdr = struct.pack("<IIQQQQQQ", 2, 6, dyn_off, dyn_off, dyn_off, len(dynamic), 32, 8)
    else:
        ehsize, phentsize = 52, 32
        dyn_off = ehsize + phentsize
        header = struct.pack(
            "<HHIIIIIHHHHHH", e_type, 3, 1, 0x8048000, ehsize, 0, 0, ehsize, phentsize, 1, 40, 0, 0
        )
        dynamic = struct.pack("<iIiI", 0x6FFFFFFB, flags_1, 0, 0)
        phdr = struct.pack("<IIIIIIII", 2, dyn_off, dyn_off, dyn_off, len(dynamic), 16, 6, 4)
    return ident + header + phdr + dynamic + b"\0" * 64


def _macho() -> bytes:
    # MH_MAGIC_64 little endian, CPU_TYPE_X86_64, subtype 3, MH_EXECUTE, no load commands.
    return b"\xcf\xfa\xed\xfe" + struct.pack("<iiIIII", 0x01000007, 3, 2, 0, 0, 0) + b"\0" * 64


def _png() -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _jpeg() -> bytes:
    app0 = b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8\xff\xe0" + struct.pack(">H", len(app0) + 2) + app0 + b"\xff\xd9"


def _gif() -> bytes:
    return b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff" + (
        b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    )


def _pdf() -> bytes:
    return (
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
        b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
        b"trailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )


def _7z() -> bytes:
    # Signature header: magic, version 0.4, start-header CRC, next header offset/size/CRC.
    return b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24 + b"\x00" * 32


def _rar4() -> bytes:
    # Marker block followed by a (zeroed) main archive header.
    return b"Rar!\x1a\x07\x00" + b"\xcf\x90\x73\x00\x00\x0d\x00" + b"\x00" * 6 + b"\x00" * 32


def _rar5() -> bytes:
    return b"Rar!\x1a\x07\x01\x00" + b"\x00" * 40


def _ole(stream_name: str) -> bytes:
    """Minimal CFB v3: header, one FAT sector, one directory sector (root + stream)."""
    end, free, fatsect = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD
    header = bytearray(512)
    header[0:8] = bytes.fromhex("D0CF11E0A1B11AE1")
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIII", header, 0x28, 0, 1, 1, 0, 4096, end, 0, end)
    struct.pack_into("<I", header, 0x44, 0)  # number of DIFAT sectors
    difat = [0] + [free] * 108
    struct.pack_into("<109I", header, 0x4C, *difat)
    fat = struct.pack("<128I", fatsect, end, *([free] * 126))

    def entry(name: str, obj_type: int, child: int) -> bytes:
        raw = bytearray(128)
        encoded = (name + "\0").encode("utf-16-le")
        raw[0 : len(encoded)] = encoded
        struct.pack_into("<HBB", raw, 64, len(encoded), obj_type, 1)
        struct.pack_into("<III", raw, 68, free, free, child)
        struct.pack_into("<II", raw, 116, end, 0)
        return bytes(raw)

    directory = entry("Root Entry", 5, 1) + entry(stream_name, 2, free) + b"\0" * 256
    return bytes(header) + fat + directory


_JS = b"""function add(a, b) {
  return a + b;
}
var total = add(1, 2);
const double = (y) => y * 2;
console.log(double(total));
"""

_PS1 = b"""param([string]$Name = "world")
$items = Get-ChildItem -Path C:\\Windows | Where-Object { $_.Length -gt 100 }
foreach ($item in $items) { Write-Host "Hello $Name $($item.Name)" }
"""

_BATCH = b"@echo off\r\nset FOO=bar\r\necho %FOO%\r\nexit /b 0\r\n"

_HTML = (
    b"<!DOCTYPE html>\n<html>\n<head><title>t</title></head>\n<body><p>hello</p></body>\n</html>\n"
)

_TEXT = b"The quick brown fox jumps over the lazy dog.\nSecond line of plain prose.\n"


def _cart(version: int = 1) -> bytes:
    """A CaRT header: magic, version, reserved 0, then padding past the 38-byte minimum."""
    return b"CART" + struct.pack("<hQ", version, 0) + b"\0" * 56


def _v7_tar() -> bytes:
    """A pre-POSIX tar: no "ustar" magic at 257 (the header checksum redone without it)."""
    header = bytearray(_tar()[:512])
    header[257:265] = b"\0" * 8
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header) + _tar()[512:]


_SAMPLES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "zip": (lambda: _zip({"a.txt": b"hello", "b/c.bin": bytes(range(256))}), "archive/zip", "zip"),
    "gzip": (lambda: gzip.compress(b"hello gzip" * 10), "archive/gzip", "gzip"),
    "bzip2": (lambda: bz2.compress(b"hello bzip2" * 10), "archive/bzip2", "bzip"),
    "xz": (lambda: lzma.compress(b"hello xz" * 10), "archive/xz", "xz"),
    "tar": (_tar, "archive/tar", "tar"),
    "7z": (_7z, "archive/7-zip", "7zip"),
    "rar4": (_rar4, "archive/rar", "rar"),
    "rar5": (_rar5, "archive/rar", "rar"),
    "jar": (
        lambda: _zip({"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\n", "A.class": b"\xca\xfe"}),
        "java/jar",
        "jar",
    ),
    "pe32": (lambda: _pe(pe64=False, dll=False), "executable/windows/pe32", "exe"),
    "pe64": (lambda: _pe(pe64=True, dll=False), "executable/windows/pe64", "exe"),
    "dll32": (lambda: _pe(pe64=False, dll=True), "executable/windows/dll32", "dll"),
    "dll64": (lambda: _pe(pe64=True, dll=True), "executable/windows/dll64", "dll"),
    "elf64": (lambda: _elf(is64=True, e_type=2), "executable/linux/elf64", ""),
    "elf32": (lambda: _elf(is64=False, e_type=2), "executable/linux/elf32", ""),
    "so64": (lambda: _elf(is64=True, e_type=3), "executable/linux/so64", ""),
    "so32": (lambda: _elf(is64=False, e_type=3), "executable/linux/so32", ""),
    "pie64": (lambda: _elf(is64=True, e_type=3, pie=True), "executable/linux/elf64", ""),
    "pie32": (lambda: _elf(is64=False, e_type=3, pie=True), "executable/linux/elf32", ""),
    "mach-o": (_macho, "executable/mach-o", ""),
    "pdf": (_pdf, "document/pdf", "pdf"),
    "ole-doc": (lambda: _ole("WordDocument"), "document/office/word", "doc"),
    "ole-xls": (lambda: _ole("Workbook"), "document/office/excel", "xls"),
    "ole-ppt": (lambda: _ole("PowerPoint Document"), "document/office/powerpoint", "ppt"),
    "ole-other": (lambda: _ole("SomethingElse"), "document/office/unknown", ""),
    "docx": (lambda: _ooxml("word"), "document/office/word", "doc"),
    "xlsx": (lambda: _ooxml("xl"), "document/office/excel", "xls"),
    "pptx": (lambda: _ooxml("ppt"), "document/office/powerpoint", "ppt"),
    "html": (lambda: _HTML, "code/html", "html"),
    "javascript": (lambda: _JS, "code/javascript", "js"),
    "shell": (lambda: b"#!/bin/sh\necho hello\nexit 0\n", "code/shell", "sh"),
    "bash-env": (lambda: b"#!/usr/bin/env bash\nset -e\nls -l\n", "code/shell", "sh"),
    "powershell": (lambda: _PS1, "code/ps1", "txt"),
    "batch": (lambda: _BATCH, "code/batch", "bat"),
    "batch-no-echo-off": (
        lambda: b"rem setup\r\nset A=1\r\nif exist C:\\x goto done\r\n:done\r\nexit /b 0\r\n",
        "code/batch",
        "bat",
    ),
    "text": (lambda: _TEXT, "text/plain", "txt"),
    "json": (lambda: b'{"name": "azul", "values": [1, 2, 3]}\n', "text/json", "json"),
    "png": (_png, "image/png", "png"),
    "jpeg": (_jpeg, "image/jpg", "jpg"),
    "gif": (_gif, "image/gif", "gif"),
    "random": (lambda: random.Random(1234).randbytes(4096), "unknown", ""),
    "empty": (lambda: b"", "unknown", ""),
    # Every signature and structure check in rules.toml, and the refinements behind them.
    "bzip2-level-not-a-digit": (lambda: b"BZhx" + b"\0" * 100, "archive/bzip2", "bzip"),
    "cart": (_cart, "archive/cart", "cart"),
    "cart-version-2": (lambda: _cart(2), "unknown", ""),
    "fat-mach-o": (lambda: b"\xca\xfe\xba\xbe\0\0\0\x02" + b"\0" * 100, "executable/mach-o", ""),
    "java-class": (lambda: b"\xca\xfe\xba\xbe\0\0\0\x34" + b"\0" * 100, "code/class", "class"),
    "zstd": (lambda: b"\x28\xb5\x2f\xfd" + b"\0" * 40, "archive/zstd", ""),
    "cabinet": (lambda: b"MSCF\0\0\0\0" + b"\0" * 60, "archive/cabinet", "cab"),
    "chm": (lambda: b"ITSF\x03\0\0\0" + b"\0" * 60, "archive/chm", "chm"),
    "rtf": (lambda: b"{\\rtf1\\ansi hello}", "document/office/rtf", "rtf"),
    "sqlite": (lambda: b"SQLite format 3\0" + b"\0" * 100, "db/sqlite", "sqlite"),
    "gif87a": (lambda: b"GIF87a\x01\0\x01\0\0\0\0;", "image/gif", "gif"),
    "gzip-reserved-method": (lambda: b"\x1f\x8b\0" + b"\0" * 40, "archive/gzip", "gzip"),
    "lzma": (lambda: lzma.compress(b"hello" * 9, format=lzma.FORMAT_ALONE), "archive/lzma", "lzma"),
    "tar-v7": (_v7_tar, "archive/tar", "tar"),
    "dos": (lambda: b"MZ" + b"\0" * 0x3E + b"\0" * 200, "executable/windows/dos", "exe"),
    "mz-before-ustar": (
        lambda: b"MZ" + b"\0" * 255 + b"ustar\x0000" + b"\0" * 300,
        "executable/windows/dos",
        "exe",
    ),
    "ole-encrypted": (
        lambda: _ole("EncryptedPackage"),
        "document/office/passwordprotected",
        "doc",
    ),
    "ole-msi": (lambda: _ole("\u4840\u3f3f"), "installer/windows", "msi"),
    "ole-visio": (lambda: _ole("VisioDocument"), "document/office/visio", "vsd"),
    "ole-outlook": (lambda: _ole("__substg1.0_0037001F"), "document/office/email", "eml"),
    "ole-book": (lambda: _ole("Book"), "document/office/excel", "xls"),
    "apk": (
        lambda: _zip(
            {"META-INF/MANIFEST.MF": b"x", "AndroidManifest.xml": b"x", "classes.dex": b"x"}
        ),
        "android/apk",
        "apk",
    ),
    "ipa": (lambda: _zip({"Payload/App.app/Info.plist": b"<plist/>"}), "ios/ipa", "ipa"),
    "jar-by-classes": (lambda: _zip({"a/A.class": b"x", "a/B.class": b"x"}), "java/jar", "jar"),
    "odt": (
        lambda: _zip(
            {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
            zipfile.ZIP_STORED,  # libmagic reads the stored mimetype member
        ),
        "document/odt/text",
        "",
    ),
    "epub": (
        lambda: _zip({"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<c/>"}),
        "archive/zip",
        "zip",
    ),
    "python-versioned": (lambda: b"#!/usr/bin/python3.11\nprint(1)\n", "code/python", "py"),
    "env-node": (lambda: b"#!/usr/bin/env node\nconsole.log(1)\n", "code/javascript", "js"),
    "ruby": (lambda: b"#!/usr/bin/ruby\nputs 1\n", "code/ruby", "txt"),
    "perl": (lambda: b"#!/usr/bin/perl\nprint 1;\n", "code/perl", "pl"),
    "html-by-its-end": (lambda: b"some text\n" * 40 + b"<p>x</p>\n</html>\n", "code/html", "html"),
    "xml": (lambda: b"<?xml version='1.0'?>\n<root><a>1</a></root>\n", "document/xml", "xml"),
}


# --------------------------------------------------------------------------- #
# Identification
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("name", sorted(_SAMPLES))
def test_identify_bytes(name: str) -> None:
    build, file_format, extension = _SAMPLES[name]
    result = identify_bytes(build())
    assert (result.file_format, result.file_extension) == (file_format, extension), result


@pytest.mark.parametrize("name", sorted(_SAMPLES))
def test_identify_path_matches_bytes(name: str, tmp_path: Path) -> None:
    data = _SAMPLES[name][0]()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert identify_path(path) == identify_bytes(data)
    assert identify_path(str(path)) == identify_bytes(data)


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"", "application/x-empty"),
        (b"%PDF-1.4\n%%EOF\n", "application/pdf"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"),
        (b"just some words\n", "text/plain"),
    ],
)
def test_mime_and_magic_come_from_libmagic(data: bytes, mime: str) -> None:
    result = identify_bytes(data)
    assert result.mime == mime
    assert result.magic  # libmagic always describes something ("empty", "data", ...)


def test_unknown_has_empty_extension() -> None:
    result = identify_bytes(b"\x00\x01\x02\x03" * 64 + random.Random(7).randbytes(1000))
    assert result.file_format == "unknown"
    assert result.file_extension == ""


def test_mz_without_pe_header_is_not_pe() -> None:
    result = identify_bytes(b"MZ" + b"\x00" * 10)
    assert not result.file_format.startswith("executable/windows/pe")


def test_zip_appended_to_junk_is_found() -> None:
    data = random.Random(3).randbytes(300) + _zip({"x.txt": b"x"})
    assert identify_bytes(data).file_format == "archive/zip"


def test_powershell_utf16_big_endian() -> None:
    data = b"\xfe\xff" + _PS1.decode().encode("utf-16-be")
    assert identify_bytes(data).file_format == "code/ps1"


def test_pe_with_unknown_machine_and_no_optional_header() -> None:
    data = bytearray(_pe(pe64=False, dll=False))
    struct.pack_into("<H", data, 0x44, 0x1234)  # machine
    struct.pack_into("<H", data, 0x58, 0)  # optional header magic
    assert identify_bytes(bytes(data)).file_format == "executable/windows/pe"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("zip", "archive/zip"),
        ("docx", "archive/zip"),  # member names refine only in identify_bytes
        ("pe64", "executable/windows/pe64"),
        ("ole-doc", "document/office/word"),
        ("ole-other", None),  # libmagic would decide
        ("cart-version-2", None),
        ("tar", "archive/tar"),
        ("tar-v7", None),
        ("text", None),
        ("empty", None),
    ],
)
def test_signature_format_is_the_magic_bytes_step_alone(name: str, expected: str | None) -> None:
    assert signature_format(_SAMPLES[name][0]()) == expected


def test_powershell_utf16_with_bom() -> None:
    data = b"\xff\xfe" + _PS1.decode().encode("utf-16-le")
    assert identify_bytes(data).file_format == "code/ps1"


def test_identify_is_thread_safe() -> None:
    names = sorted(_SAMPLES)
    blobs = {name: _SAMPLES[name][0]() for name in names}
    expected = {name: identify_bytes(blobs[name]) for name in names}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        jobs = [(name, pool.submit(identify_bytes, blobs[name])) for name in names * 5]
        for name, job in jobs:
            assert job.result() == expected[name]


def test_identify_version() -> None:
    assert IDENTIFY_VERSION == 2


def test_filetype_is_frozen() -> None:
    result = identify_bytes(b"hello\n")
    assert isinstance(result, FileType)
    with pytest.raises(AttributeError):
        result.file_format = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- #
# Hashing
# --------------------------------------------------------------------------- #


def _expected(data: bytes) -> FileDigests:
    return FileDigests(
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        sha256=hashlib.sha256(data).hexdigest(),
        sha512=hashlib.sha512(data).hexdigest(),
    )


_DATA = random.Random(42).randbytes(100_003)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096, 65536, len(_DATA), len(_DATA) + 1])
def test_hasher_matches_hashlib(chunk_size: int) -> None:
    data = _DATA[:5000] if chunk_size == 1 else _DATA  # keep the 1-byte case fast
    hasher = FileHasher()
    for start in range(0, len(data), chunk_size):
        hasher.update(data[start : start + chunk_size])
    assert hasher.size == len(data)
    assert hasher.digests() == _expected(data)


def test_hasher_uneven_chunks_and_buffer_types() -> None:
    hasher = FileHasher()
    rng = random.Random(9)
    pos = 0
    kinds = (bytes, bytearray, memoryview)
    while pos < len(_DATA):
        n = rng.randint(0, 5000)
        chunk = _DATA[pos : pos + n]
        hasher.update(kinds[pos % 3](chunk))
        pos += n
    assert hasher.digests() == _expected(_DATA)


def test_hasher_empty() -> None:
    assert FileHasher().digests() == _expected(b"")


def test_hasher_digests_is_repeatable() -> None:
    hasher = FileHasher()
    hasher.update(b"abc")
    first = hasher.digests()
    assert hasher.digests() == first
    hasher.update(b"def")
    assert hasher.digests() == _expected(b"abcdef")


def test_hasher_sha256_only() -> None:
    hasher = FileHasher(sha256_only=True)
    hasher.update(b"abc")
    hasher.update(b"def")
    digests = hasher.digests()
    assert digests == FileDigests(
        size=6, md5="", sha1="", sha256=hashlib.sha256(b"abcdef").hexdigest(), sha512=""
    )


# --------------------------------------------------------------------------- #
# Hostile / malformed input
# --------------------------------------------------------------------------- #


def test_pe_header_offset_past_end() -> None:
    data = bytearray(_pe(pe64=False, dll=False))
    struct.pack_into("<I", data, 0x3C, 0xFFFFFFF0)
    assert not identify_bytes(bytes(data)).file_format.startswith("executable/windows/pe")


def test_ole_directory_chain_cycle_terminates() -> None:
    data = bytearray(_ole("WordDocument"))
    struct.pack_into("<I", data, 512 + 4, 1)  # directory sector 1 chains to itself
    assert identify_bytes(bytes(data)).file_format == "document/office/word"


def test_truncated_zip_stays_zip() -> None:
    data = _ooxml("word")[:40]
    assert identify_bytes(data).file_format == "archive/zip"


def test_zip_metadata_read_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    from azuld.identify import structure

    monkeypatch.setattr(structure, "_ZIP_MAX_READ", 64)
    # The central directory is larger than the cap, so members are not inspected.
    assert identify_bytes(_ooxml("word")).file_format == "archive/zip"


def test_elf_with_absurd_program_headers() -> None:
    data = bytearray(_elf(is64=True, e_type=3, pie=True))
    struct.pack_into("<Q", data, 32, 2**63)  # e_phoff far past the end
    assert identify_bytes(bytes(data)).file_format == "executable/linux/so64"
