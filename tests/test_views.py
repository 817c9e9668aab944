"""A source's binaries as a tree, read from the embedded log."""

from __future__ import annotations

from pathlib import Path

from azuld.backends.embedded import open_embedded_log
from azuld.core.publish import prepare_binary
from azuld.models.events import Author, Feature, PathNode
from azuld.views import source_tree
from tests.conftest import NOW, make_binary, sha


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
