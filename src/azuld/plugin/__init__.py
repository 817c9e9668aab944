"""A Trio SDK for azuld plugins, speaking the same protocol as azul-runner.

Write a `Plugin` subclass with an async `execute(job)`; run it with `azuld plugin run`.
"""

from azuld.plugin.api import Child, Consumer, Feature, FeatureType, Filters, Job, OptOut, Plugin
from azuld.plugin.client import DispatcherClient, DispatcherError, HttpDispatcherClient
from azuld.plugin.local import LocalDispatcher, run_local
from azuld.plugin.runner import PluginRunner

__all__ = [
    "Child",
    "Consumer",
    "DispatcherClient",
    "DispatcherError",
    "Feature",
    "FeatureType",
    "Filters",
    "HttpDispatcherClient",
    "Job",
    "LocalDispatcher",
    "OptOut",
    "Plugin",
    "PluginRunner",
    "run_local",
]
