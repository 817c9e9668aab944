"""The sans-I/O core of azuld.

Everything under `azuld.core` is synchronous and pure: it takes events, query parameters and the
current time (`now`, passed in) and returns decisions. It never imports trio, quart, aiokafka or
sqlite3, never reads a clock and never touches the network or disk (ruff's banned-api rule in
`src/azuld/core/ruff.toml` enforces the imports). The adapters in `azuld.backends`, `azuld.storage`
and `azuld.http` do the I/O around it.
"""
