"""The Info plugin on a hand-built PE32 (with one import), a hand-built ELF64, plain text and
broken headers."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from azuld.models.events import BinaryEvent, StatusEntity
from azuld.plugin import run_local
from azuld.plugins.info import Info, describe

TIMESTAMP = 1_600_000_000  # 2020-09-13T12:26:40Z
INTERPRETER = b"/lib64/ld-linux-x86-64.so.2"


def make_pe(*, dll: bool = False, machine: int = 0x14C, subsystem: int = 3) -> bytes:
    """A minimal PE32: headers, then one .idata section importing KERNEL32.dll!ExitProcess."""
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    characteristics = 0x0102 | (0x2000 if dll else 0)
    coff = struct.pack("<HHIIIHH", machine, 1, TIMESTAMP, 0, 0, 0xE0, characteristics)
    optional = struct.pack(
        "<HBBIIIIII", 0x10B, 14, 0, 0x200, 0x200, 0, 0x1000, 0x1000, 0x1000
    ) + struct.pack(
        "<IIIHHHHHHIIIIHHIIIIII",
        0x400000,
        0x1000,
        0x200,
        4,
        0,
        0,
        0,
        4,
        0,
        0,
        0x2000,
        0x200,
        0,
        subsystem,
        0,
        0x100000,
        0x1000,
        0x100000,
        0x1000,
        0,
        16,
    )
    directories = bytearray(16 * 8)
    struct.pack_into("<II", directories, 8, 0x1000, 40)  # the import directory
    section = struct.pack(
        "<8sIIIIIIHHI", b".idata", 0x200, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0xC0000040
    )
    headers = bytes(dos) + b"PE\x00\x00" + coff + optional + bytes(directories) + section
    body = bytearray(0x200)
    struct.pack_into("<IIIII", body, 0x00, 0x1040, 0, 0, 0x1070, 0x1050)  # descriptor, then null
    struct.pack_into("<II", body, 0x40, 0x1060, 0)  # import lookup table
    struct.pack_into("<II", body, 0x50, 0x1060, 0)  # import address table
    body[0x60 : 0x60 + 14] = b"\x00\x00ExitProcess\x00"
    body[0x70 : 0x70 + 13] = b"KERNEL32.dll\x00"
    return headers.ljust(0x200, b"\x00") + bytes(body)


def make_elf() -> bytes:
    """A minimal ELF64 x86-64 executable: a PT_INTERP program header and three sections."""
    interp = INTERPRETER + b"\x00"
    names = b"\x00.interp\x00.shstrtab\x00"
    interp_at = 64 + 56
    names_at = interp_at + len(interp)
    sections_at = (names_at + len(names) + 7) // 8 * 8
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0x401000, 64, sections_at, 0, 64, 56, 1, 64, 3, 2
    )
    program = struct.pack(
        "<IIQQQQQQ", 3, 4, interp_at, 0x400000 + interp_at, 0, len(interp), len(interp), 1
    )
    sections = (
        bytes(64)
        + struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, interp_at, len(interp), 0, 0, 1, 0)
        + struct.pack("<IIQQQQIIQQ", 9, 3, 0, 0, names_at, len(names), 0, 0, 1, 0)
    )
    return (header + program + interp + names).ljust(sections_at, b"\x00") + sections


async def info(tmp_path: Path, data: bytes, name: str = "sample.bin") -> StatusEntity:
    path = tmp_path / name
    path.write_bytes(data)
    [status] = await run_local(Info(), [path])
    assert status.entity.status == "completed", status.entity.message
    return status.entity


def values(entity: StatusEntity) -> dict[str, list[str]]:
    [result] = entity.results
    assert isinstance(result, BinaryEvent)
    found: dict[str, list[str]] = {}
    for feature in result.entity.features:
        found.setdefault(feature.name, []).append(feature.value)
    return found


async def test_hashes_size_and_type_of_text(tmp_path: Path) -> None:
    data = b"plain words\n" * 10
    entity = await info(tmp_path, data, "notes.txt")
    found = values(entity)
    assert found["md5"] == [hashlib.md5(data).hexdigest()]
    assert found["sha1"] == [hashlib.sha1(data).hexdigest()]
    assert found["sha256"] == [hashlib.sha256(data).hexdigest()]
    assert found["sha512"] == [hashlib.sha512(data).hexdigest()]
    assert found["size"] == [str(len(data))]
    assert found["file_format"] == ["text/plain"]
    assert found["mime"] == ["text/plain"]
    assert not any(name.startswith(("pe_", "elf_")) for name in found)
    assert "malformed" not in found
    [result] = entity.results
    assert result.entity.info["file_format"] == "text/plain"


async def test_pe_header_fields(tmp_path: Path) -> None:
    entity = await info(tmp_path, make_pe(), "sample.exe")
    found = values(entity)
    assert found["file_format"] == ["executable/windows/pe32"]
    assert found["pe_machine"] == ["IMAGE_FILE_MACHINE_I386"]
    assert found["pe_timestamp"] == ["2020-09-13T12:26:40+00:00"]
    assert found["pe_section_count"] == ["1"]
    assert found["pe_subsystem"] == ["IMAGE_SUBSYSTEM_WINDOWS_CUI"]
    assert found["pe_is_dll"] == ["0"]
    assert found["pe_entry_point"] == [str(0x1000)]
    assert found["pe_imphash"] == [hashlib.md5(b"kernel32.exitprocess").hexdigest()]
    assert "malformed" not in found
    [result] = entity.results
    assert result.entity.info["pe"]["pe_timestamp"] == "2020-09-13T12:26:40+00:00"
    types = {f.name: f.type for f in result.entity.features}
    assert types["pe_timestamp"] == "datetime"


async def test_pe_dll(tmp_path: Path) -> None:
    found = values(await info(tmp_path, make_pe(dll=True, machine=0x8664, subsystem=2), "a.dll"))
    assert found["pe_is_dll"] == ["1"]
    assert found["pe_machine"] == ["IMAGE_FILE_MACHINE_AMD64"]
    assert found["pe_subsystem"] == ["IMAGE_SUBSYSTEM_WINDOWS_GUI"]


async def test_elf_header_fields(tmp_path: Path) -> None:
    found = values(await info(tmp_path, make_elf(), "sample"))
    assert found["file_format"] == ["executable/linux/elf64"]
    assert found["elf_class"] == ["ELFCLASS64"]
    assert found["elf_machine"] == ["EM_X86_64"]
    assert found["elf_type"] == ["ET_EXEC"]
    assert found["elf_entry_point"] == [str(0x401000)]
    assert found["elf_section_count"] == ["3"]
    assert found["elf_interpreter"] == [INTERPRETER.decode()]
    assert "malformed" not in found


@pytest.mark.parametrize(
    "data",
    [
        make_pe()[:0x90],  # the optional header is cut short
        make_pe()[:0x40] + b"PE\x00\x00" + b"\xff" * 30,
    ],
)
async def test_malformed_pe_is_a_feature_not_a_crash(tmp_path: Path, data: bytes) -> None:
    found = values(await info(tmp_path, data, "broken.exe"))
    assert found["malformed"][0].startswith("pe: ")
    assert found["size"] == [str(len(data))]


async def test_malformed_elf_keeps_what_parsed(tmp_path: Path) -> None:
    data = bytearray(make_elf())
    struct.pack_into("<Q", data, 32, 1 << 40)  # e_phoff far past the end
    found = values(await info(tmp_path, bytes(data), "broken"))
    assert found["elf_machine"] == ["EM_X86_64"]
    assert "elf_interpreter" not in found
    assert any(m.startswith("elf: cannot read the program headers") for m in found["malformed"])


async def test_truncated_elf_header(tmp_path: Path) -> None:
    found = values(await info(tmp_path, make_elf()[:20], "stub"))
    assert found["malformed"][0].startswith("elf: ")


def test_describe_is_synchronous_and_pure() -> None:
    first = describe(make_pe())
    second = describe(make_pe())
    assert first.features == second.features
    assert first.sha256 == hashlib.sha256(make_pe()).hexdigest()
