"""A Trio SDK for azuld plugins, speaking the same protocol as azul-runner.

Write a `Plugin` subclass with an async `execute(job)`; run it with `azuld plugin run`.
"""

from azuld.plugin.api import Child, Consumer, Feature, FeatureType, Filters, Job, OptOut, Plugin
from azuld.plugin.client import (
    DispatcherClient,
    DispatcherError,
    DispatcherRefused,
    DispatcherUnavailable,
    HttpDispatcherClient,
    open_dispatcher,
)
from azuld.plugin.link import Backoff, DispatcherLink, GaveUp
from azuld.plugin.local import LocalDispatcher, run_local
from azuld.plugin.runner import PluginRunner

__all__ = [
    "Backoff",
    "Child",
    "Consumer",
    "DispatcherClient",
    "DispatcherError",
    "DispatcherLink",
    "DispatcherRefused",
    "DispatcherUnavailable",
    "Feature",
    "FeatureType",
    "Filters",
    "GaveUp",
    "HttpDispatcherClient",
    "Job",
    "LocalDispatcher",
    "OptOut",
    "Plugin",
    "PluginRunner",
    "open_dispatcher",
    "run_local",
]
