"""The dispatcher: where the sans-I/O core meets the event log."""

from azuld.dispatch.dispatcher import TICK_SECONDS, Dispatcher, FetchResult

__all__ = ["TICK_SECONDS", "Dispatcher", "FetchResult"]
