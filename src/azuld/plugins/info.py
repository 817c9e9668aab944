"""Info: hashes, size and file type of every binary, and a few header fields of PE and ELF files.

Features on every binary: `md5`, `sha1`, `sha256`, `sha512`, `size` (recomputed from the bytes)
and `file_format`, `file_extension`, `mime`, `magic` (re-identified with `azuld.identify`).

PE files (MZ header pointing at a `PE\\0\\0` signature), via `pefile`: `pe_machine` (e.g.
``IMAGE_FILE_MACHINE_AMD64``), `pe_timestamp` (the COFF TimeDateStamp, as a datetime),
`pe_section_count` (NumberOfSections), `pe_imphash`, `pe_subsystem` (e.g.
``IMAGE_SUBSYSTEM_WINDOWS_GUI``), `pe_is_dll` (1 or 0) and `pe_entry_point`.

ELF files, via `pyelftools`: `elf_class` (``ELFCLASS32``/``ELFCLASS64``), `elf_machine` (e.g.
``EM_X86_64``), `elf_type` (e.g. ``ET_DYN``), `elf_entry_point`, `elf_section_count` and
`elf_interpreter` (the PT_INTERP path, when there is one).

Headers that do not parse give a `malformed` feature (``"pe: ..."`` / ``"elf: ..."``) and
whatever fields did parse; they never fail the job. Parsing runs in a worker thread.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pefile  # type: ignore[import-untyped]
import trio
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from azuld.identify import FileHasher, identify_bytes
from azuld.plugin import Feature, Job, Plugin

__all__ = ["Info", "describe"]

T = TypeVar("T")

# pefile stops collecting past these; a hostile header cannot make it loop for long.
_IMPORT_DIRECTORY = pefile.DIRECTORY_ENTRY["IMAGE_DIRECTORY_ENTRY_IMPORT"]
_IMAGE_FILE_DLL = 0x2000
_MAX_WARNINGS = 20


@dataclass(slots=True)
class Description:
    """What `describe` found: feature values in order, info, and malformed messages."""

    sha256: str = ""
    features: list[tuple[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    malformed: list[str] = field(default_factory=list)

    def attempt(self, kind: str, name: str, read: Callable[[], T]) -> T | None:
        """`read()`, or None with a malformed message when the header makes it fail."""
        try:
            return read()
        except Exception as exc:  # hostile headers: any parser failure is "malformed"
            self.malformed.append(f"{kind}: cannot read {name}: {type(exc).__name__}: {exc}")
            return None

    def add(self, name: str, value: Any, section: dict[str, Any]) -> None:
        if value is None or value == "":
            return
        self.features.append((name, value))
        section[name] = value.isoformat() if isinstance(value, datetime) else value


def _has_pe_signature(data: bytes) -> bool:
    if len(data) < 0x40 or not data.startswith(b"MZ"):
        return False
    (offset,) = struct.unpack_from("<I", data, 0x3C)
    return data[offset : offset + 4] == b"PE\x00\x00"


def _describe_pe(data: bytes, found: Description) -> None:
    section: dict[str, Any] = {}
    found.info["pe"] = section
    try:
        pe = pefile.PE(data=data, fast_load=True)
    except Exception as exc:  # PEFormatError, or anything a hostile header triggers
        found.malformed.append(f"pe: {type(exc).__name__}: {exc}")
        return
    with pe:
        header = pe.FILE_HEADER
        optional = pe.OPTIONAL_HEADER
        machine = header.Machine
        found.add("pe_machine", pefile.MACHINE_TYPE.get(machine, f"0x{machine:04x}"), section)
        found.add("pe_timestamp", datetime.fromtimestamp(header.TimeDateStamp, UTC), section)
        found.add("pe_section_count", int(header.NumberOfSections), section)
        found.add("pe_is_dll", 1 if header.Characteristics & _IMAGE_FILE_DLL else 0, section)
        if optional is not None:
            subsystem = optional.Subsystem
            found.add("pe_subsystem", pefile.SUBSYSTEM_TYPE.get(subsystem, str(subsystem)), section)
            found.add("pe_entry_point", int(optional.AddressOfEntryPoint), section)

        def imphash() -> str:
            pe.parse_data_directories(directories=[_IMPORT_DIRECTORY])
            return str(pe.get_imphash())

        found.add("pe_imphash", found.attempt("pe", "the imports", imphash), section)
        warnings = [str(w) for w in pe.get_warnings()]
        if warnings:
            section["warnings"] = warnings[:_MAX_WARNINGS]


def _describe_elf(data: bytes, found: Description) -> None:
    section: dict[str, Any] = {}
    found.info["elf"] = section
    try:
        elf = ELFFile(io.BytesIO(data))
        header = elf.header
    except Exception as exc:  # ELFError, ELFParseError, struct errors on hostile input
        found.malformed.append(f"elf: {type(exc).__name__}: {exc}")
        return
    found.add("elf_class", str(header["e_ident"]["EI_CLASS"]), section)
    found.add("elf_machine", str(header["e_machine"]), section)
    found.add("elf_type", str(header["e_type"]), section)
    found.add("elf_entry_point", int(header["e_entry"]), section)
    found.add(
        "elf_section_count", found.attempt("elf", "the section count", elf.num_sections), section
    )

    def interpreter() -> str:
        for segment in elf.iter_segments(type="PT_INTERP"):
            if isinstance(segment, InterpSegment):
                return segment.get_interp_name()
        return ""

    found.add("elf_interpreter", found.attempt("elf", "the program headers", interpreter), section)


def describe(data: bytes) -> Description:
    """Hashes, type and executable header fields of `data` (synchronous; CPU-bound)."""
    hasher = FileHasher()
    hasher.update(data)
    digests = hasher.digests()
    found = Description(sha256=digests.sha256)
    kind = identify_bytes(data)
    found.features.extend(
        [
            ("md5", digests.md5),
            ("sha1", digests.sha1),
            ("sha256", digests.sha256),
            ("sha512", digests.sha512),
            ("size", digests.size),
        ]
    )
    found.features.extend(
        (name, value)
        for name, value in (
            ("file_format", kind.file_format),
            ("file_extension", kind.file_extension),
            ("mime", kind.mime),
            ("magic", kind.magic),
        )
        if value
    )
    found.info["size"] = digests.size
    found.info["file_format"] = kind.file_format
    if _has_pe_signature(data):
        _describe_pe(data, found)
    elif data.startswith(b"\x7fELF"):
        _describe_elf(data, found)
    return found


class Info(Plugin):
    """Hashes, size and type of every binary; machine, timestamp and such of PE and ELF files."""

    name = "Info"
    version = "1.0.0"
    features = (
        Feature("md5", "MD5 of the content", "string"),
        Feature("sha1", "SHA-1 of the content", "string"),
        Feature("sha256", "SHA-256 of the content", "string"),
        Feature("sha512", "SHA-512 of the content", "string"),
        Feature("size", "Size of the content in bytes", "integer"),
        Feature("pe_machine", "PE COFF machine type", "string"),
        Feature("pe_timestamp", "PE COFF TimeDateStamp (compile time, as claimed)", "datetime"),
        Feature("pe_section_count", "PE NumberOfSections", "integer"),
        Feature("pe_imphash", "PE import hash", "string"),
        Feature("pe_subsystem", "PE optional header subsystem", "string"),
        Feature("pe_is_dll", "1 if the PE is a DLL, else 0", "integer"),
        Feature("pe_entry_point", "PE AddressOfEntryPoint (an RVA)", "integer"),
        Feature("elf_class", "ELF class (ELFCLASS32 or ELFCLASS64)", "string"),
        Feature("elf_machine", "ELF e_machine", "string"),
        Feature("elf_type", "ELF e_type", "string"),
        Feature("elf_entry_point", "ELF e_entry", "integer"),
        Feature("elf_section_count", "Number of ELF sections", "integer"),
        Feature("elf_interpreter", "ELF program interpreter (PT_INTERP)", "filepath"),
    )

    async def execute(self, job: Job) -> None:
        data = await job.read()
        found = await trio.to_thread.run_sync(describe, data, abandon_on_cancel=True)
        for name, value in found.features:
            job.add_feature(name, value)
        for message in found.malformed:
            job.add_feature("malformed", message)
        claimed = job.event.entity.sha256
        if claimed and claimed != found.sha256:  # the event described other bytes
            found.info["event_sha256"] = claimed
        job.add_info(found.info)
