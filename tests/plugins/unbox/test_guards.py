"""Unbox's guards: depth, member count, sizes, ratio, names, links and cancellation."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import py7zr
import pytest
import rarfile  # type: ignore[import-untyped]

from azuld.plugin import LocalDispatcher, PluginRunner
from azuld.plugin.local import local_event
from azuld.plugins.unbox import Limits, Unbox, extract
from tests.plugins.unbox.samples import (
    HELLO,
    OTHER,
    RAR3_SOLID,
    RAR5_HARDLINKS,
    RAR5_SYMLINKS,
    STEST,
    MiB,
    RawEntry,
    assert_completed,
    children,
    deflate,
    features,
    gzip_wrap,
    main_result,
    make_7z,
    make_tar,
    make_zip,
    raw_zip,
    sha,
    skipped,
    tar_entry,
    unbox,
    zeros_deflate,
)

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
