"""Unbox: extract the members of archives and resubmit each as an `extracted` child.

Formats: zip (plain, ZipCrypto and WinZip AES, via `pyzipper`), tar (plain and inside gzip, bzip2,
xz or lzma), single gzip / bzip2 / xz / lzma streams, 7z (`py7zr`, also with encrypted data or
headers) and rar (`rarfile`, which parses the headers itself and pipes compressed or encrypted
members through the `unar` tool: Debian package `unar`; archives with encrypted *headers* also
need the `cryptography` package). The container is recognised from the content's magic bytes
(`azuld.identify`'s table, then a tar header check), falling back to the event's `file_format`;
anything else opts out with `unsupported-format`.

Each extracted member becomes a child: ``job.add_child(data, {"action": "extracted",
"container": "zip", ...}, filename="dir/member.txt")``. A tar inside a compressed stream (e.g. a
`.tar.gz`) is unpacked in one go: its members are the children, with ``"container": "tar"`` and
``"compression": "gzip"`` in the relationship. A member opened with a password from the list
has ``"password": ...`` in its relationship too.

Config keys (`-c key=value`), all optional:

``passwords`` (``infected,malware,virus,password``)
    Comma-separated passwords tried, in order, on encrypted members (the one that worked last is
    tried first on the next member).
``max_depth`` (5)
    No unpacking when the event's `source.path` already has this many nodes: opt-out
    ``max-depth``. A sourced archive has depth 1, its children 2, and so on, so by default four
    levels of nested archives are opened. (The runner's own `depth_limit`, 10, applies as well.)
``max_members`` (1000)
    At most this many entries (files, directories, links, everything the listing holds) are
    looked at, in archive order. A larger archive is *truncated*, not refused: the first
    `max_members` entries are processed, the rest are not, and the result carries the feature
    ``archive_truncated`` and ``info["truncated"]`` saying so. `archive_member_count` is the
    archive's real entry count where its directory gives it (zip, 7z, rar); for tar streams,
    which have no directory, it is the number seen, a lower bound (``info["member_count_exact"]``
    is false). A zip whose directory declares more than 100 x `max_members` entries is not
    parsed at all (opt-out ``too-many-members``), so a hostile directory cannot eat the memory.
``max_member_bytes`` (104857600, 100 MiB)
    A member larger than this is skipped: at once when its header says so, otherwise as soon as
    the bytes read while streaming pass the limit (headers are not trusted alone).
``max_total_bytes`` (524288000, 500 MiB)
    All extracted members together stay under this; the member that would pass it is dropped
    and extraction stops there (truncated). For formats that must decompress what they skip
    (compressed tars, 7z) every decompressed byte, kept or not, counts against the same budget.
``max_ratio`` (100) and ``ratio_min_bytes`` (1048576, 1 MiB)
    Compression-bomb guard, checked while streaming: once a member's output passes
    `ratio_min_bytes` it may not exceed `max_ratio` times its compressed size (the member's own
    compressed size for zip and rar, the whole archive's for single streams and 7z). Over it,
    the member is skipped. For a compressed tar the whole decompressed stream is measured against
    the archive size, and extraction stops when it trips.

Members are never written to disk: each is read in 1 MiB chunks into memory, bounded by the
limits above. Only a rar archive itself is written, to a private temporary directory (the
`unar` backend needs a path), which is removed afterwards.

Skipped members are reported in ``archive_skipped`` as ``"<name>: <reason>"`` (at most 100
values, then one summary value): names that are absolute or climb out with ``..`` (never
sanitised into something else), symlinks, hardlinks, devices, fifos and other special entries
(never followed), members over a limit or the ratio, empty members, corrupt members and
encrypted members no listed password opens.

Outcomes:

* the archive cannot be opened or listed at all (corrupt, truncated, not really that format):
  opt-out ``corrupt-archive``, with the parser's message;
* every encrypted member (or the encrypted header) refuses every listed password and nothing was
  extracted: opt-out ``password-required``; with some members extracted, the others are reported
  in ``archive_skipped`` as ``password-required`` instead;
* damage found after some members came out (a CRC error, a truncated tar): the job completes with
  what was extracted, the bad members in ``archive_skipped`` and a ``malformed`` feature;
* a rar member that needs the missing `unar` tool: skipped as ``rar-backend-missing``, or, with
  nothing extracted, opt-out ``rar-backend-missing``.

Not supported: zip members packed with methods pyzipper lacks (deflate64, PPMd, ...: skipped as
``unsupported: ...``), multi-volume rar and 7z sets (only one volume is ever at hand: such a
volume opts out as ``corrupt-archive``), and archive formats outside
`SUPPORTED_FORMATS` (cab, iso, cpio, zstd, ...). Zips that `azuld.identify` calls something
else (`java/jar`, `android/apk`, OOXML documents) are not in the filter.

Layout: `plugin` (the plugin: depth guard, sniffing, reporting), `extract` (container to
extractor), `walk` (the member walk every extractor shares: it applies the guards of `guards`
to each entry and records what came out), `limits` (the config), `sniff`, and a module per
family: `ziparchive`, `tararchive`, `compressed` (single streams), `sevenzip`, `rararchive`.
"""

from __future__ import annotations

from azuld.plugins.unbox.extract import extract
from azuld.plugins.unbox.guards import safe_member_path
from azuld.plugins.unbox.limits import Limits
from azuld.plugins.unbox.plugin import Unbox
from azuld.plugins.unbox.sniff import SUPPORTED_FORMATS, sniff_container

__all__ = ["SUPPORTED_FORMATS", "Limits", "Unbox", "extract", "safe_member_path", "sniff_container"]
