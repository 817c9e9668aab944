"""Archives built for the Unbox tests, and helpers to run the plugin on them.

RAR cannot be written with anything Debian or PyPI ships, so the rar samples are small files
from rarfile's own test suite (ISC licence, (c) Marko Kreen), inlined as base64. Reading the
compressed and encrypted ones needs the `unar` tool (Debian package `unar`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import py7zr
import pyzipper  # type: ignore[import-untyped]

from azuld.models.events import BinaryEvent, StatusEntity
from azuld.plugin import run_local
from azuld.plugins.unbox import Unbox

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
