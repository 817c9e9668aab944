"""A source's binaries as a tree (`azuld show`): read from the embedded log, and on the real
daemon with the bundled plugins, where a binary both submitted and extracted from an archive
appears in both places, each with its own name, and every feature value found twice (once per
job on it) is shown once."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
import trio

from azuld.backends.embedded import open_embedded_log
from azuld.cli.client import AzuldClient
from azuld.cli.replies import SourceNode
from azuld.core.publish import prepare_binary
from azuld.models.events import Author, BinaryEvent, Feature, PathNode
from azuld.views import forest, source_tree
from tests.conftest import NOW, make_binary, sha
from tests.daemon import running_daemon


async def test_a_source_as_a_tree_with_the_features_plugins_found(tmp_path: Path) -> None:
    parent = make_binary("archive")
    child = make_binary("member", action="extracted")
    child.source.path = [
        *parent.source.path,
        PathNode(
            author=Author(name="Unbox"), action="extracted", sha256=sha("member"), timestamp=NOW
        ),
    ]
    enriched = make_binary("member", action="enriched")
    enriched.author = Author(name="Entropy")
    enriched.source.path = [*child.source.path]
    enriched.entity.features = [Feature(name="entropy", value="3.5", type="float")]
    elsewhere = make_binary("other", source="elsewhere")
    async with open_embedded_log(tmp_path / "events.sqlite3") as log:
        await log.append([prepare_binary("test", e) for e in (parent, child, enriched, elsewhere)])
        (root,) = await source_tree(log, "test", "samples")
        assert (root["sha256"], root["filename"]) == (sha("archive"), "")
        (member,) = root["children"]
        assert member["sha256"] == sha("member")
        assert member["features"] == {"Entropy": {"entropy": ["3.5"]}}
        assert member["children"] == []
        # `limit` bounds the events read: one event, one binary.
        assert len(await source_tree(log, "test", "samples", 1)) == 1


INNER = b"#!/bin/sh\necho 'the same bytes inside and outside the zip'\n"


async def azuld(*args: str) -> str:
    done = await trio.run_process(
        [sys.executable, "-m", "azuld", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def features(node: SourceNode) -> dict[str, dict[str, list[str]]]:
    return {plugin: dict(found) for plugin, found in node.features.items()}


@pytest.mark.slow
async def test_each_position_is_shown_and_each_value_once(tmp_path: Path) -> None:
    sample = tmp_path / "sample.zip"
    with zipfile.ZipFile(sample, "w") as archive:
        archive.writestr("readme.txt", "hello from the zip\n" * 20)
        archive.writestr("bin/tool.sh", INNER)
    loose = tmp_path / "loose.sh"
    loose.write_bytes(INNER)

    async with running_daemon(tmp_path / "data") as daemon:
        server = ["--server", daemon.url]
        await azuld("submit", str(sample), str(loose), "--source", "demo", *server)
        await azuld("plugin", "run", "unbox", *server, "--max-jobs", "1")
        # The zip, loose.sh, and the two members: tool.sh's bytes are entropy's job twice.
        await azuld("plugin", "run", "entropy", *server, "--max-jobs", "4")
        tree = await azuld("show", "--source", "demo", *server)

        def reply() -> list[SourceNode]:
            with AzuldClient(daemon.url) as client:
                return client.source("demo")

        roots = await trio.to_thread.run_sync(reply)

    # Roots in the order their events were stored: the two uploads ran at once.
    zipped, outside = sorted(roots, key=lambda node: node.filename != "sample.zip")
    assert (zipped.filename, outside.filename) == ("sample.zip", "loose.sh")
    readme, inside = zipped.children
    assert (readme.filename, inside.filename) == ("readme.txt", "bin/tool.sh")
    assert inside.sha256 == outside.sha256
    assert (inside.file_format, inside.size) == (outside.file_format, len(INNER))
    # Entropy ran on those bytes twice (as loose.sh and as bin/tool.sh): each value once, in
    # both places.
    assert features(inside) == features(outside)
    assert {name: len(values) for name, values in inside.features["Entropy"].items()} == {
        "entropy": 1,
        "entropy_block": 1,
        "entropy_max_block": 1,
    }

    lines = tree.splitlines()
    assert any(line.startswith("sample.zip  archive/zip") for line in lines)
    assert any(line.startswith("└── bin/tool.sh  code/shell") for line in lines)
    assert any(line.startswith("loose.sh  code/shell") for line in lines)
    assert tree.count(inside.sha256) == 2
    entropy_lines = [line.strip() for line in lines if "Entropy: " in line]
    assert len(entropy_lines) == 4  # the zip, readme.txt, bin/tool.sh, loose.sh
    assert "values]" not in tree
    tool, loose_line = (
        lines[lines.index(line) + 1].strip() for line in lines if "code/shell" in line
    )
    assert tool == loose_line


def test_positions_whose_parents_were_not_read_never_nest_in_a_loop() -> None:
    """Y extracted from X and X extracted from Y (two archives holding each other), with
    neither submission read: each is a root, not under the other (that would be a loop)."""

    def extracted(name: str, parent: str) -> BinaryEvent:
        event = make_binary(name, action="extracted")
        node = PathNode(
            author=Author(name="Unbox"), action="sourced", sha256=sha(parent), timestamp=NOW
        )
        event.source.path = [node, *event.source.path]
        return event

    roots = forest([extracted("y", "x"), extracted("x", "y")])
    assert [(root["sha256"], len(root["children"])) for root in roots] == [
        (sha("y"), 0),
        (sha("x"), 0),
    ]
