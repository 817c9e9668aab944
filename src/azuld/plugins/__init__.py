"""Plugins that ship with azuld. `BUNDLED` maps the names `azuld plugin run NAME` takes to
`module:Class`."""

BUNDLED = {
    "entropy": "azuld.plugins.entropy:Entropy",
    "unbox": "azuld.plugins.unbox:Unbox",
    "info": "azuld.plugins.info:Info",
    "metadata": "azuld.plugins.metadata:Metadata",
    "indexer": "azuld.plugins.indexer:Indexer",
}

__all__ = ["BUNDLED"]
