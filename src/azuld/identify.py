"""Blob hashing and file-type identification in the style of the Azul dispatcher.

The ``file_format`` names and ``file_extension`` values follow Azul's
``identify.yaml`` (identify version 2) id mappings, e.g. ``archive/zip``,
``executable/windows/pe32`` or ``text/plain``. ``mime`` and ``magic`` come from
libmagic (via python-magic); ``magic`` is the first description libmagic gives
when asked to keep going, as Azul reports it.

Identification order: empty input, then magic bytes (with structure parsing for
PE, ELF, zip/OOXML and OLE), then libmagic description rules, then trusted
libmagic mime types, then text heuristics for scripts.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import threading
import zipfile
from dataclasses import dataclass
from typing import BinaryIO, Final

import magic

from azuld.models.events import Datastream

__all__ = [
    "IDENTIFY_VERSION",
    "FileDigests",
    "FileHasher",
    "FileType",
    "identify_bytes",
    "identify_path",
    "to_datastream",
]

IDENTIFY_VERSION: Final = 2

UNKNOWN: Final = "unknown"

# How much of the start of a blob is handed to libmagic.
_MAGIC_BYTES: Final = 1 << 20
# How much of the start of a blob the text heuristics look at.
_TEXT_BYTES: Final = 64 * 1024
# How much of the end of a blob the text heuristics look at.
_TAIL_BYTES: Final = 256


# --------------------------------------------------------------------------- #
# Hashing
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class FileDigests:
    """Size and lowercase hex digests of a blob ("" for digests not computed)."""

    size: int
    md5: str
    sha1: str
    sha256: str
    sha512: str


class FileHasher:
    """Incremental md5/sha1/sha256/sha512 + size; feed chunks with update()."""

    __slots__ = ("_md5", "_sha1", "_sha256", "_sha512", "size")

    def __init__(self, *, sha256_only: bool = False) -> None:
        """Start empty hashes; with ``sha256_only`` only sha256 is computed."""
        self.size: int = 0
        self._sha256 = hashlib.sha256()
        self._md5: hashlib._Hash | None = None
        self._sha1: hashlib._Hash | None = None
        self._sha512: hashlib._Hash | None = None
        if not sha256_only:
            self._md5 = hashlib.md5(usedforsecurity=False)
            self._sha1 = hashlib.sha1(usedforsecurity=False)
            self._sha512 = hashlib.sha512()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        """Feed the next chunk of the blob."""
        self._sha256.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)
        if self._sha1 is not None:
            self._sha1.update(chunk)
        if self._sha512 is not None:
            self._sha512.update(chunk)
        self.size += memoryview(chunk).nbytes

    def digests(self) -> FileDigests:
        """Return the digests of everything fed so far (hasher stays usable)."""
        return FileDigests(
            size=self.size,
            md5=self._md5.hexdigest() if self._md5 is not None else "",
            sha1=self._sha1.hexdigest() if self._sha1 is not None else "",
            sha256=self._sha256.hexdigest(),
            sha512=self._sha512.hexdigest() if self._sha512 is not None else "",
        )


# --------------------------------------------------------------------------- #
# File types
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, slots=True)
class FileType:
    """libmagic mime/description plus Azul-style file_format and file_extension."""

    mime: str
    magic: str
    file_format: str
    file_extension: str


# Azul identify.yaml id -> extension (only the ids this module can produce).
_EXTENSIONS: Final[dict[str, str]] = {
    "android/apk": "apk",
    "archive/7-zip": "7zip",
    "archive/ace": "ace",
    "archive/ar": "ar",
    "archive/arj": "arj",
    "archive/bzip2": "bzip",
    "archive/cabinet": "cab",
    "archive/cart": "cart",
    "archive/chm": "chm",
    "archive/cpio": "cpio",
    "archive/deb": "deb",
    "archive/gzip": "gzip",
    "archive/iso": "iso",
    "archive/lzma": "lzma",
    "archive/rar": "rar",
    "archive/rpm": "rpm",
    "archive/squashfs": "squashfs",
    "archive/tar": "tar",
    "archive/tnef": "tnef",
    "archive/xz": "xz",
    "archive/zip": "zip",
    "archive/zstd": "",
    "audiovisual/flash": "swf",
    "code/autorun": "inf",
    "code/batch": "bat",
    "code/class": "class",
    "code/html": "html",
    "code/javascript": "js",
    "code/perl": "pl",
    "code/php": "php",
    "code/ps1": "txt",
    "code/python": "py",
    "code/ruby": "txt",
    "code/sgml": "sgml",
    "code/shell": "sh",
    "code/xml": "xml",
    "db/sqlite": "sqlite",
    "document/email": "eml",
    "document/installer/windows": "msi",
    "document/odt/chart": "",
    "document/odt/formula": "",
    "document/odt/graphics": "",
    "document/odt/presentation": "",
    "document/odt/spreadsheet": "",
    "document/odt/text": "",
    "document/office/email": "eml",
    "document/office/excel": "xls",
    "document/office/ole": "",
    "document/office/passwordprotected": "doc",
    "document/office/powerpoint": "ppt",
    "document/office/rtf": "rtf",
    "document/office/sylk": "slk",
    "document/office/unknown": "",
    "document/office/visio": "vsd",
    "document/office/word": "doc",
    "document/pdf": "pdf",
    "document/ps": "ps",
    "document/xml": "xml",
    "executable/linux/elf32": "",
    "executable/linux/elf64": "",
    "executable/linux/so32": "",
    "executable/linux/so64": "",
    "executable/mach-o": "",
    "executable/windows/com": "com",
    "executable/windows/dll32": "dll",
    "executable/windows/dll64": "dll",
    "executable/windows/dos": "exe",
    "executable/windows/pe": "exe",
    "executable/windows/pe32": "exe",
    "executable/windows/pe64": "exe",
    "image/bmp": "bmp",
    "image/gif": "gif",
    "image/icon": "ico",
    "image/jpg": "jpg",
    "image/png": "png",
    "image/svg": "svg",
    "image/tiff": "tiff",
    "image/webp": "webp",
    "installer/windows": "msi",
    "ios/ipa": "ipa",
    "java/jar": "jar",
    "meta/shortcut/windows": "lnk",
    "metadata/sysmon": "",
    "network/tcpdump": "pcap",
    "text/json": "json",
    "text/plain": "txt",
    "text/windows/registry": "reg",
    UNKNOWN: "",
}

# Ordered (regex over a lowercased libmagic description, file_format) rules.
# First rule matching any description line wins.
_MAGIC_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = tuple(
    (re.compile(pattern), fmt)
    for pattern, fmt in (
        (r"transport neutral encapsulation format", "archive/tnef"),
        (r"ms windows htmlhelp data", "archive/chm"),
        (r"^pe32\+ .*\(dll\)", "executable/windows/dll64"),
        (r"^pe32\+ ", "executable/windows/pe64"),
        (r"^pe32 .*\(dll\)", "executable/windows/dll32"),
        (r"^pe32 ", "executable/windows/pe32"),
        (r"^pe unknown", "executable/windows/pe"),
        (r"^(ms-)?dos executable|^8086 relocatable", "executable/windows/dos"),
        (r"^com executable", "executable/windows/com"),
        (r"^elf 32-bit .*shared object", "executable/linux/so32"),
        (r"^elf 64-bit .*shared object", "executable/linux/so64"),
        (r"^elf 32-bit", "executable/linux/elf32"),
        (r"^elf 64-bit", "executable/linux/elf64"),
        (r"^mach-o", "executable/mach-o"),
        (r"^7-zip archive data", "archive/7-zip"),
        (r"^ace archive data", "archive/ace"),
        (r"^arj archive data", "archive/arj"),
        (r"^bzip2 compressed data", "archive/bzip2"),
        (r"^(installshield cab|microsoft cabinet archive data)", "archive/cabinet"),
        (r"cpio archive", "archive/cpio"),
        (r"^gzip compressed data", "archive/gzip"),
        (r"iso 9660", "archive/iso"),
        (r"^lzma compressed data", "archive/lzma"),
        (r"^rar archive data", "archive/rar"),
        (r"^squashfs filesystem", "archive/squashfs"),
        (r"^((gnu|posix) )?tar archive", "archive/tar"),
        (r"^xz compressed data", "archive/xz"),
        (r"^zstandard compressed data", "archive/zstd"),
        (r"^zip archive data", "archive/zip"),
        (r"^(tcpdump|pcap)", "network/tcpdump"),
        (r"^pdf document", "document/pdf"),
        (r"^(pc bitmap|device independent bitmap graphic)", "image/bmp"),
        (r"^gif image data", "image/gif"),
        (r"^jpeg image data", "image/jpg"),
        (r"^png image data", "image/png"),
        (r"^ms windows icon resource", "image/icon"),
        (r"^tiff image", "image/tiff"),
        (r"installation database|windows installer|advanced installer", "installer/windows"),
        (r"microsoft.*excel", "document/office/excel"),
        (r"microsoft.*powerpoint", "document/office/powerpoint"),
        (r"microsoft.*word", "document/office/word"),
        (r"microsoft.*visio", "document/office/visio"),
        (r"rich text format", "document/office/rtf"),
        (r"^spreadsheet interchange document", "document/office/sylk"),
        (r"^cdfv2 encrypted", "document/office/passwordprotected"),
        (r"composite document file|cdfv2", "document/office/unknown"),
        (r"ole 2", "document/office/ole"),
        (r"microsoft.*(ooxml|document)", "document/office/unknown"),
        (r"macromedia flash", "audiovisual/flash"),
        (r"^rpm ", "archive/rpm"),
        (r"^debian binary package", "archive/deb"),
        (r"ar archive", "archive/ar"),
        (r"microsoft windows autorun", "code/autorun"),
        (r"dos batch file", "code/batch"),
        (r"^dalvik dex|android package \(apk\)", "android/apk"),
        (r"[ (]jar[) ]", "java/jar"),
        (r"java class data", "code/class"),
        (r"perl .*script", "code/perl"),
        (r"php script", "code/php"),
        (r"python .*(script|byte)", "code/python"),
        (r"(shell|sh) script", "code/shell"),
        (r"^ms windows shortcut", "meta/shortcut/windows"),
        (r"mime entity|^smtp mail|^rfc 822 mail|^news or mail,", "document/email"),
        (r"ms windows vista event log", "metadata/sysmon"),
        (r"javascript source|node\.js script", "code/javascript"),
        (r"html", "code/html"),
        (r"sgml", "code/sgml"),
        (r"xml", "document/xml"),
        (r"^(ascii|unicode|utf-8 unicode|iso-8859|non-iso extended-ascii)\b.*\btext", "text/plain"),
    )
)

# libmagic mime types trusted when the description rules found nothing better.
_TRUSTED_MIMES: Final[dict[str, str]] = {
    "application/gzip": "archive/gzip",
    "application/java-archive": "java/jar",
    "application/json": "text/json",
    "application/pdf": "document/pdf",
    "application/vnd.android.package-archive": "android/apk",
    "application/vnd.ms-cab-compressed": "archive/cabinet",
    "application/vnd.ms-excel": "document/office/excel",
    "application/vnd.ms-outlook": "document/office/email",
    "application/vnd.ms-powerpoint": "document/office/powerpoint",
    "application/msword": "document/office/word",
    "application/vnd.oasis.opendocument.chart": "document/odt/chart",
    "application/vnd.oasis.opendocument.formula": "document/odt/formula",
    "application/vnd.oasis.opendocument.graphics": "document/odt/graphics",
    "application/vnd.oasis.opendocument.presentation": "document/odt/presentation",
    "application/vnd.oasis.opendocument.spreadsheet": "document/odt/spreadsheet",
    "application/vnd.oasis.opendocument.text": "document/odt/text",
    "application/x-7z-compressed": "archive/7-zip",
    "application/x-bzip2": "archive/bzip2",
    "application/x-mach-binary": "executable/mach-o",
    "application/x-ms-evtx": "metadata/sysmon",
    "application/x-msdownload": "executable/windows/pe",
    "application/x-msi": "installer/windows",
    "application/vnd.ms-msi": "installer/windows",
    "application/x-rar": "archive/rar",
    "application/x-sqlite3": "db/sqlite",
    "application/x-tar": "archive/tar",
    "application/x-xz": "archive/xz",
    "application/zip": "archive/zip",
    "application/zstd": "archive/zstd",
    "image/bmp": "image/bmp",
    "image/gif": "image/gif",
    "image/jpeg": "image/jpg",
    "image/png": "image/png",
    "image/svg+xml": "image/svg",
    "image/tiff": "image/tiff",
    "image/vnd.microsoft.icon": "image/icon",
    "image/webp": "image/webp",
    "message/rfc822": "document/email",
    "text/x-msdos-batch": "code/batch",
    "text/x-ms-regedit": "text/windows/registry",
    "text/x-php": "code/php",
    "text/x-python": "code/python",
    "text/x-shellscript": "code/shell",
    "text/xml": "code/xml",
}


# --------------------------------------------------------------------------- #
# libmagic (one handle pair per thread)
# --------------------------------------------------------------------------- #


class _MagicHandles(threading.local):
    """Per-thread libmagic handles; libmagic cookies are not thread-safe."""

    describe: magic.Magic | None = None
    mime: magic.Magic | None = None


_HANDLES: Final = _MagicHandles()


def _libmagic(buf: bytes) -> tuple[list[str], str]:
    """Return (libmagic description lines, mime type) for ``buf``."""
    if _HANDLES.describe is None or _HANDLES.mime is None:
        _HANDLES.describe = magic.Magic(keep_going=True, raw=True)
        _HANDLES.mime = magic.Magic(mime=True)
    try:
        raw = _HANDLES.describe.from_buffer(buf)
    except magic.MagicException:
        raw = ""
    try:
        mime = _HANDLES.mime.from_buffer(buf).strip()
    except magic.MagicException:
        mime = ""
    lines = [line.removeprefix("-").strip() for line in raw.split("\n")]
    return [line for line in lines if line], mime


# --------------------------------------------------------------------------- #
# Structure sniffing
# --------------------------------------------------------------------------- #


class _Blob:
    """Random access over a seekable binary stream of known size."""

    __slots__ = ("head", "size", "stream")

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.size = size
        stream.seek(0)
        self.head = stream.read(_MAGIC_BYTES)

    def read_at(self, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (short at end of blob)."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        if offset + length <= len(self.head):
            return self.head[offset : offset + length]
        self.stream.seek(offset)
        return self.stream.read(length)


def _pe_format(blob: _Blob) -> str | None:
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


def _elf_is_pie(blob: _Blob, is64: bool, order: str) -> bool:
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


def _elf_format(blob: _Blob) -> str:
    """Classify an ELF blob as elf/so 32/64 (PIE executables count as elf)."""
    head = blob.head
    is64 = head[4:5] == b"\x02"
    width = "64" if is64 else "32"
    order = ">" if head[5:6] == b"\x02" else "<"
    e_type = struct.unpack_from(order + "H", head, 16)[0] if len(head) >= 18 else 0
    if e_type == 3 and not _elf_is_pie(blob, is64, order):  # ET_DYN
        return f"executable/linux/so{width}"
    return f"executable/linux/elf{width}"


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


def _zip_names(blob: _Blob) -> list[str] | None:
    """Member names of a zip blob, or None when it does not open as a zip."""
    try:
        blob.stream.seek(0)
        with zipfile.ZipFile(_CappedStream(blob.stream, blob.size)) as zf:
            return zf.namelist()
    except Exception:  # hostile input: any failure just means "not a usable zip"
        return None


def _zip_format(names: list[str]) -> str:
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


_OLE_SIGNATURE: Final = bytes.fromhex("D0CF11E0A1B11AE1")
_OLE_END: Final = 0xFFFFFFFA  # sector ids >= this are special markers
_OLE_MAX_DIR_SECTORS: Final = 64


def _ole_stream_names(blob: _Blob) -> set[str]:
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


def _ole_format(names: set[str]) -> str | None:
    """Classify an OLE2 container by its stream names; None if inconclusive."""
    if "EncryptedPackage" in names:
        return "document/office/passwordprotected"
    if any(name.startswith("\u4840") for name in names):  # MSI table streams
        return "installer/windows"
    if "WordDocument" in names:
        return "document/office/word"
    if "Workbook" in names or "Book" in names:
        return "document/office/excel"
    if "PowerPoint Document" in names:
        return "document/office/powerpoint"
    if "VisioDocument" in names:
        return "document/office/visio"
    if any(name.startswith(("__substg1.0_", "__properties_version1.0")) for name in names):
        return "document/office/email"
    return None


_SIMPLE_SIGNATURES: Final[tuple[tuple[int, bytes, str], ...]] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "document/pdf"),
    (0, b"\x1f\x8b\x08", "archive/gzip"),
    (0, b"7z\xbc\xaf\x27\x1c", "archive/7-zip"),
    (0, b"Rar!\x1a\x07\x00", "archive/rar"),
    (0, b"Rar!\x1a\x07\x01\x00", "archive/rar"),
    (0, b"\xfd7zXZ\x00", "archive/xz"),
    (0, b"\x28\xb5\x2f\xfd", "archive/zstd"),
    (0, b"MSCF\0\0\0\0", "archive/cabinet"),
    (0, b"ITSF", "archive/chm"),
    (0, b"{\\rt", "document/office/rtf"),
    (0, b"SQLite format 3\0", "db/sqlite"),
    (257, b"ustar", "archive/tar"),
)

_MACHO_MAGICS: Final = (
    b"\xfe\xed\xfa\xce",
    b"\xce\xfa\xed\xfe",
    b"\xfe\xed\xfa\xcf",
    b"\xcf\xfa\xed\xfe",
)


def _by_signature(blob: _Blob, magics: list[str]) -> str | None:
    """Identify by leading magic bytes (plus light structure parsing)."""
    head = blob.head
    if head.startswith(b"MZ"):
        pe = _pe_format(blob)
        if pe is not None:
            return pe
        return None  # plain DOS / NE / LE or not an executable: libmagic decides
    if head.startswith(b"\x7fELF"):
        return _elf_format(blob)
    if head[:4] in _MACHO_MAGICS:
        return "executable/mach-o"
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8:
        # Fat Mach-O and Java class files share a magic; Java's major version >= 45.
        (second,) = struct.unpack_from(">I", head, 4)
        return "executable/mach-o" if 0 < second < 45 else "code/class"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        return "archive/zip"  # refined from member names in _identify
    if head.startswith(_OLE_SIGNATURE):
        ole = _ole_format(_ole_stream_names(blob))
        return ole or _from_magic_rules(magics, "document/office/unknown")
    if head.startswith(b"BZh") and head[3:4].isdigit():
        return "archive/bzip2"
    if len(head) > 38 and head.startswith(b"CART"):
        version = int.from_bytes(head[4:6], "little")
        reserved = int.from_bytes(head[6:14], "little")
        if version == 1 and reserved == 0:
            return "archive/cart"
    for offset, sig, fmt in _SIMPLE_SIGNATURES:
        if head.startswith(sig, offset):
            return fmt
    return None


def _from_magic_rules(magics: list[str], default: str) -> str:
    """Apply the ordered libmagic description rules; ``default`` if none match."""
    lowered = [line.lower() for line in magics]
    for pattern, fmt in _MAGIC_RULES:
        if any(pattern.search(line) for line in lowered):
            return fmt
    return default


# --------------------------------------------------------------------------- #
# Text heuristics
# --------------------------------------------------------------------------- #


def _decode_text(data: bytes) -> str | None:
    """Decode ``data`` if it looks like text (BOM aware); None if binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    else:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "replace")
    if not text.strip() or "\x00" in text:
        return None
    sample = text[:8192]
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r\f\v\x1b"))
    return text if bad <= len(sample) // 100 else None


_SHEBANG = re.compile(r"\A#!\s*(\S+)(?:[ \t]+(\S+))?")
_INTERPRETERS: Final[dict[str, str]] = {
    "sh": "code/shell",
    "bash": "code/shell",
    "dash": "code/shell",
    "zsh": "code/shell",
    "ksh": "code/shell",
    "ash": "code/shell",
    "csh": "code/shell",
    "tcsh": "code/shell",
    "busybox": "code/shell",
    "python": "code/python",
    "perl": "code/perl",
    "php": "code/php",
    "ruby": "code/ruby",
    "node": "code/javascript",
    "nodejs": "code/javascript",
    "deno": "code/javascript",
    "pwsh": "code/ps1",
    "powershell": "code/ps1",
}

_HTML_START = re.compile(
    r"\A\s*(?:<!--.*?-->\s*|<\?xml[^>]*>\s*)*<(?:!doctype\s+html|html)\b", re.I | re.S
)
_HTML_LINE = re.compile(r"(?:^|\n|>)[ \t]*<(?:!doctype\s+html|html)\b", re.I)
_HTML_END = re.compile(r"</html\s*>\s*\Z", re.I)

_BATCH_ECHO_OFF = re.compile(r"\A\s*@?echo\s+off\b", re.I)
_BATCH_LINES: Final = tuple(
    re.compile(p, re.I | re.M)
    for p in (
        r"^\s*@?rem(\s|$)",
        r"^\s*::",
        r"^\s*@?set\s+(/[ap]\s+)?\"?\w+=",
        r"^\s*@?setlocal\b",
        r"^\s*@?goto\s+:?\w+",
        r"^\s*:\w+\s*$",
        r"^\s*@?if\s+(/i\s+)?(not\s+)?(exist|errorlevel|defined|\"?%)",
        r"^\s*@?for\s+/[fdlr]\s",
        r"^\s*@?call\s+:",
        r"^\s*@?exit\s+/b\b",
        r"%~?[0-9]|%\w+%",
        r"^\s*@?(taskkill|schtasks|vssadmin|netsh|tasklist|timeout)\s+/",
        r"^\s*@?(reg\s+(add|query|delete)|net\s+(user|use|start|stop|localgroup))\s",
    )
)

_PS_CMDLET = re.compile(
    r"\b(?:Get|Set|New|Remove|Add|Start|Stop|Invoke|Write|Out|Import|Export|ConvertTo|ConvertFrom|Select|"
    r"Where|ForEach|Test|Copy|Move|Rename|Clear|Wait|Expand|Compress|Resolve|Split|Join|Register|Enable|Disable)"
    r"-[A-Z][A-Za-z]+\b",
    re.I,
)
_PS_STRONG: Final = tuple(
    re.compile(p, re.I | re.M)
    for p in (
        r"^\s*param\s*\(",
        r"\[CmdletBinding\(",
        r"\[[\w.]+(\[\])?\]::\w+",
        r"\|\s*(iex|out-null)\b",
        r"\$PSHOME\b|\$PSScriptRoot\b|\$env:\w+",
        r"-ExecutionPolicy\s+Bypass",
    )
)
_PS_WEAK: Final = tuple(
    re.compile(p, re.I | re.M)
    for p in (
        r"\$\w+\s*=",
        r"\s-[ic]?(eq|ne|gt|ge|lt|le|like|notlike|match|notmatch|contains|replace)\s",
        r"\$_\.",
    )
)

_JS_STRONG: Final = tuple(
    re.compile(p, re.M)
    for p in (
        r"(?:^|[;\s(])(?:var|let|const)\s+[\w$]+\s*=",
        r"\b(?:document|window)\.\w+",
        r"\bconsole\.\w+\(",
        r"\bmodule\.exports\b|\brequire\(\s*['\"]",
        r"\bnew\s+ActiveXObject\(|\bWScript\.\w+",
        r"\bfunction\s*[\w$]*\s*\([\w$\s,]*\)\s*\{",
        r"\b(?:eval|unescape|setTimeout|decodeURIComponent)\(",
        r"\.(?:charCodeAt|fromCharCode|prototype)\b",
    )
)
_JS_WEAK: Final = tuple(
    re.compile(p, re.M)
    for p in (
        r"=>",
        r"===|!==",
        r";\s*$",
        r"\bthis\.\w+",
        r"\breturn\b[^;\n]*;",
    )
)


def _count(patterns: tuple[re.Pattern[str], ...], text: str) -> int:
    """Number of ``patterns`` that occur in ``text``."""
    return sum(1 for pattern in patterns if pattern.search(text))


def _text_format(text: str, tail: str) -> str:
    """Classify decoded text as a script/markup type, or text/plain."""
    shebang = _SHEBANG.match(text)
    if shebang:
        interp = os.path.basename(shebang.group(1))
        if interp == "env" and shebang.group(2):
            interp = os.path.basename(shebang.group(2))
        interp = re.sub(r"[\d.]+$", "", interp)  # python3.11 -> python
        if interp in _INTERPRETERS:
            return _INTERPRETERS[interp]
    head = text[:1024]
    if _HTML_START.match(head) or _HTML_LINE.search(text[:256]) or _HTML_END.search(tail):
        return "code/html"
    if _BATCH_ECHO_OFF.match(text):
        return "code/batch"
    cmdlets = len({m.group(0).lower() for m in _PS_CMDLET.finditer(text)})
    ps_score = 2 * min(cmdlets, 3) + 2 * _count(_PS_STRONG, text) + _count(_PS_WEAK, text)
    js_score = 2 * _count(_JS_STRONG, text) + _count(_JS_WEAK, text)
    if ps_score >= 4 and ps_score >= js_score:
        return "code/ps1"
    if js_score >= 4:
        return "code/javascript"
    if _count(_BATCH_LINES, text) >= 3:
        return "code/batch"
    return "text/plain"


# --------------------------------------------------------------------------- #
# Identification
# --------------------------------------------------------------------------- #


def _identify(stream: BinaryIO, size: int) -> FileType:
    """Identify a seekable stream of ``size`` bytes."""
    blob = _Blob(stream, size)
    magics, mime = _libmagic(blob.head)
    first_magic = magics[0] if magics else ""
    if size == 0:
        return FileType(mime=mime, magic=first_magic, file_format=UNKNOWN, file_extension="")

    fmt = _by_signature(blob, magics)
    if fmt is None:
        fmt = _from_magic_rules(magics, UNKNOWN)
        if fmt == UNKNOWN and mime.startswith("text/"):
            fmt = "text/plain"
    if fmt in (UNKNOWN, "text/plain"):
        fmt = _TRUSTED_MIMES.get(mime, fmt)

    if fmt in ("archive/zip", "java/jar", UNKNOWN) or (
        fmt == "document/office/unknown" and not blob.head.startswith(_OLE_SIGNATURE)
    ):
        if mime.startswith("application/vnd.oasis.opendocument."):
            fmt = _TRUSTED_MIMES.get(mime, fmt)
        else:
            names = _zip_names(blob)
            if names is not None:
                fmt = _zip_format(names)

    if fmt in (UNKNOWN, "text/plain"):
        text = _decode_text(blob.head[:_TEXT_BYTES])
        if text is not None:
            if size <= _TEXT_BYTES:
                tail = text[-_TAIL_BYTES:]
            else:
                tail = blob.read_at(size - _TAIL_BYTES, _TAIL_BYTES).decode("utf-8", "replace")
            fmt = _text_format(text, tail)

    extension = _EXTENSIONS.get(fmt, "")
    return FileType(mime=mime, magic=first_magic, file_format=fmt, file_extension=extension)


def identify_path(path: str | os.PathLike[str]) -> FileType:
    """Identify the file at ``path``, reading only what identification needs."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        return _identify(fh, size)


def identify_bytes(data: bytes) -> FileType:
    """Identify an in-memory blob."""
    return _identify(io.BytesIO(data), len(data))


def to_datastream(label: str, digests: FileDigests, found: FileType) -> Datastream:
    """The wire description of a blob (reference 2.5): hashes, size and file type."""
    return Datastream(
        identify_version=IDENTIFY_VERSION,
        label=label,  # type: ignore[arg-type]
        size=digests.size,
        sha512=digests.sha512,
        sha256=digests.sha256,
        sha1=digests.sha1,
        md5=digests.md5,
        mime=found.mime,
        magic=found.magic,
        file_format=found.file_format,
        file_extension=found.file_extension,
    )
