"""Structure checks behind the magic bytes: what the headers of PE, ELF, Mach-O/Java class,
CaRT, OLE2 and zip blobs say. Bounded reads only: hostile input cannot make them read much.

Each check takes a `Blob` whose signature matched and returns an id, or None when the structure
does not confirm it (rules.toml says what happens then).
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Iterable
from typing import BinaryIO, Final

from azuld.identify.rules import OleRule

__all__ = [
    "HEAD_BYTES",
    "Blob",
    "cart_format",
    "elf_format",
    "fat_mach_o_or_class",
    "ole_format",
    "ole_stream_names",
    "pe_format",
    "zip_format",
    "zip_names",
]

# How much of the start of a blob is read at once (and handed to libmagic).
HEAD_BYTES: Final = 1 << 20


class Blob:
    """Random access over a seekable binary stream of known size."""

    __slots__ = ("head", "size", "stream")

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.size = size
        stream.seek(0)
        self.head = stream.read(HEAD_BYTES)

    def read_at(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (short at end of blob)."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        if offset + length <= len(self.head):
            return self.head[offset : offset + length]
        self.stream.seek(offset)
        return self.stream.read(length)


# --------------------------------------------------------------------------- #
# Executables
# --------------------------------------------------------------------------- #


def pe_format(blob: Blob) -> str | None:
    """Classify an MZ blob with a PE header as pe/dll 32/64; None if not PE."""
    head = blob.head
    if len(head) < 0x40:
        return None
    (e_lfanew,) = struct.unpack_from("<I", head, 0x3C)
    hdr = blob.read_at(e_lfanew, 4 + 20 + 2)
    if len(hdr) < 24 or hdr[:4] != b"PE\0\0":
        return None
    (machine,) = struct.unpack_from("<H", hdr, 4)
    (characteristics,) = struct.unpack_from("<H", hdr, 22)
    (opt_magic,) = struct.unpack_from("<H", hdr, 24) if len(hdr) >= 26 else (0,)
    if opt_magic == 0x20B:
        width = 64
    elif opt_magic == 0x10B:
        width = 32
    elif machine in (0x8664, 0xAA64, 0x0200):
        width = 64
    elif machine in (0x014C, 0x01C0, 0x01C4):
        width = 32
    else:
        return "executable/windows/pe"
    kind = "dll" if characteristics & 0x2000 else "pe"
    return f"executable/windows/{kind}{width}"


_ELF_MAX_PHNUM: Final = 512
_ELF_MAX_DYNAMIC: Final = 64 * 1024
_PT_DYNAMIC: Final = 2
_DT_FLAGS_1: Final = 0x6FFFFFFB
_DF_1_PIE: Final = 0x08000000


def _elf_is_pie(blob: Blob, is64: bool, order: str) -> bool:
    """Whether an ET_DYN ELF carries DF_1_PIE in its dynamic section (as libmagic checks)."""
    head = blob.head
    if is64:
        if len(head) < 64:
            return False
        (phoff,) = struct.unpack_from(order + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
        ph_fmt, dyn_fmt = order + "IIQQQQ", order + "qQ"
    else:
        if len(head) < 52:
            return False
        (phoff,) = struct.unpack_from(order + "I", head, 28)
        phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
        ph_fmt, dyn_fmt = order + "IIIIII", order + "iI"
    if not struct.calcsize(ph_fmt) <= phentsize <= 256 or phnum > _ELF_MAX_PHNUM:
        return False
    table = blob.read_at(phoff, phentsize * phnum)
    for index in range(len(table) // phentsize):
        fields = struct.unpack_from(ph_fmt, table, index * phentsize)
        if fields[0] != _PT_DYNAMIC:
            continue
        # 64-bit: type, flags, offset, vaddr, paddr, filesz; 32-bit: type, offset, ..., filesz.
        offset, filesz = (fields[2], fields[5]) if is64 else (fields[1], fields[4])
        dynamic = blob.read_at(offset, min(filesz, _ELF_MAX_DYNAMIC))
        step = struct.calcsize(dyn_fmt)
        for pos in range(0, len(dynamic) - step + 1, step):
            tag, value = struct.unpack_from(dyn_fmt, dynamic, pos)
            if tag == 0:
                break
            if tag == _DT_FLAGS_1:
                return bool(value & _DF_1_PIE)
    return False


def elf_format(blob: Blob) -> str:
    """Classify an ELF blob as elf/so 32/64 (PIE executables count as elf)."""
    head = blob.head
    is64 = head[4:5] == b"\x02"
    width = "64" if is64 else "32"
    order = ">" if head[5:6] == b"\x02" else "<"
    e_type = struct.unpack_from(order + "H", head, 16)[0] if len(head) >= 18 else 0
    if e_type == 3 and not _elf_is_pie(blob, is64, order):  # ET_DYN
        return f"executable/linux/so{width}"
    return f"executable/linux/elf{width}"


def fat_mach_o_or_class(blob: Blob) -> str | None:
    """Fat Mach-O and Java class files share a magic; Java's major version is >= 45."""
    head = blob.head
    if len(head) < 8:
        return None
    (second,) = struct.unpack_from(">I", head, 4)
    return "executable/mach-o" if 0 < second < 45 else "code/class"


def cart_format(blob: Blob) -> str | None:
    """A CaRT container: version 1 with the reserved field zero."""
    head = blob.head
    if len(head) <= 38:
        return None
    version = int.from_bytes(head[4:6], "little")
    reserved = int.from_bytes(head[6:14], "little")
    return "archive/cart" if version == 1 and reserved == 0 else None


# --------------------------------------------------------------------------- #
# Zip
# --------------------------------------------------------------------------- #

_ZIP_MAX_READ: Final = 32 << 20


class _CappedStream:
    """Read-only seekable view of a blob that refuses any single read above a cap.

    zipfile trusts the central-directory size in the end record; the cap keeps a
    hostile end record from making it read gigabytes into memory.
    """

    __slots__ = ("_size", "_stream")

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self._stream = stream
        self._size = size

    def read(self, n: int = -1, /) -> bytes:
        """Read ``n`` bytes (or to the end), refusing reads above the cap."""
        if n < 0:
            n = self._size - self._stream.tell()
        if n > _ZIP_MAX_READ:
            raise OSError("zip metadata read too large")
        return self._stream.read(n)

    def seek(self, offset: int, whence: int = 0, /) -> int:
        """Seek like the underlying stream."""
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        """Current position."""
        return self._stream.tell()

    def seekable(self) -> bool:
        """Always seekable."""
        return True


def zip_names(blob: Blob) -> list[str] | None:
    """Member names of a zip blob, or None when it does not open as a zip."""
    try:
        blob.stream.seek(0)
        with zipfile.ZipFile(_CappedStream(blob.stream, blob.size)) as zf:
            return zf.namelist()
    except Exception:  # hostile input: any failure just means "not a usable zip"
        return None


def zip_format(names: list[str]) -> str:
    """Refine a zip by its member names (jar, apk, ipa, OOXML, plain zip)."""
    content_types = False
    rels_or_props = False
    meta_inf = word = excel = ppt = ipa = False
    manifest = dex = False
    classes = 0
    for name in names:
        if name == "[Content_Types].xml":
            content_types = True
        elif name.startswith(("_rels/", "docProps/")):
            rels_or_props = True
        elif name.startswith("word/"):
            word = True
        elif name.startswith("xl/"):
            excel = True
        elif name.startswith("ppt/"):
            ppt = True
        elif name.startswith("META-INF/"):
            meta_inf = True
        elif name == "AndroidManifest.xml":
            manifest = True
        elif name == "classes.dex":
            dex = True
        elif name.startswith("Payload/") and name.endswith(".app/Info.plist"):
            ipa = True
        elif name.endswith((".class", ".jar")):
            classes += 1
    # ODF / EPUB keep a META-INF/ too, but always start with a "mimetype" member.
    odf_like = bool(names) and names[0] == "mimetype"
    jar = (meta_inf and not odf_like) or (0 < len(names) < classes * 2)
    if jar and manifest and dex:
        return "android/apk"
    if ipa:
        return "ios/ipa"
    if jar:
        return "java/jar"
    if content_types and rels_or_props:
        if word:
            return "document/office/word"
        if excel:
            return "document/office/excel"
        if ppt:
            return "document/office/powerpoint"
        return "document/office/unknown"
    return "archive/zip"


# --------------------------------------------------------------------------- #
# OLE2 (compound file binary)
# --------------------------------------------------------------------------- #

_OLE_END: Final = 0xFFFFFFFA  # sector ids >= this are special markers
_OLE_MAX_DIR_SECTORS: Final = 64


def ole_stream_names(blob: Blob) -> set[str]:
    """Names in an OLE2 (CFB) directory, following the chain a bounded distance."""
    head = blob.head
    if len(head) < 512:
        return set()
    shift = struct.unpack_from("<H", head, 0x1E)[0]
    if shift not in (9, 12):
        return set()
    ssz = 1 << shift
    per_fat = ssz // 4
    difat = struct.unpack_from("<109I", head, 0x4C)
    sector = struct.unpack_from("<I", head, 0x30)[0]
    names: set[str] = set()
    seen: set[int] = set()
    while sector < _OLE_END and sector not in seen and len(seen) < _OLE_MAX_DIR_SECTORS:
        seen.add(sector)
        data = blob.read_at((sector + 1) * ssz, ssz)
        for off in range(0, len(data) - 127, 128):
            name_len = struct.unpack_from("<H", data, off + 64)[0]
            if data[off + 66] == 0 or not 2 <= name_len <= 64:
                continue
            names.add(data[off : off + name_len - 2].decode("utf-16-le", "replace"))
        fat_index = sector // per_fat
        if fat_index >= len(difat) or difat[fat_index] >= _OLE_END:
            break
        entry = blob.read_at((difat[fat_index] + 1) * ssz + (sector % per_fat) * 4, 4)
        if len(entry) < 4:
            break
        sector = struct.unpack("<I", entry)[0]
    return names


def ole_format(names: set[str], table: Iterable[OleRule]) -> str | None:
    """The id of the first `table` rule the stream `names` satisfy; None if inconclusive."""
    for rule in table:
        if not rule.names.isdisjoint(names):
            return rule.id
        if rule.prefixes and any(name.startswith(rule.prefixes) for name in names):
            return rule.id
    return None
