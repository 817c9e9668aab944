"""Wire models for model_version 6 of the Azul dispatcher protocol.

The JSON keys are exactly those of the Go dispatcher (reference section 3). Unknown keys in input
are ignored, as Go does; output carries only the keys below, with empty optional fields left out.
"""

from azuld.models.events import (
    CURRENT_MODEL_VERSION,
    MODELS,
    Author,
    BinaryAction,
    BinaryEntity,
    BinaryEvent,
    BinaryFlags,
    DataLabel,
    Datastream,
    Feature,
    GenericEvent,
    PathNode,
    PluginEntity,
    PluginEvent,
    Source,
    StatusEntity,
    StatusEvent,
    StatusValue,
)
from azuld.models.responses import (
    DataResponse,
    ErrorBody,
    FetchInfo,
    PostFailure,
    PostResponse,
)

__all__ = [
    "CURRENT_MODEL_VERSION",
    "MODELS",
    "Author",
    "BinaryAction",
    "BinaryEntity",
    "BinaryEvent",
    "BinaryFlags",
    "DataLabel",
    "DataResponse",
    "Datastream",
    "ErrorBody",
    "Feature",
    "FetchInfo",
    "GenericEvent",
    "PathNode",
    "PluginEntity",
    "PluginEvent",
    "PostFailure",
    "PostResponse",
    "Source",
    "StatusEntity",
    "StatusEvent",
    "StatusValue",
]
