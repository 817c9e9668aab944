"""The `azuld` command line.

`commands.py` is the table of every command (name, arguments, handler); `main.py` runs one.
Handlers: `daemon.py` (serve, config check), `submit.py`, `admin.py` (plugins, status, show,
failed, reoffer), `watch.py`, `plugin_run.py`. They reach the daemon through `client.py`, a small
typed client whose replies are the structs in `replies.py`; `target.py` says which daemon
(`--server` > `AZULD_SERVER` > the config file > http://127.0.0.1:8111).
"""

from azuld.cli.main import main

__all__ = ["main"]
