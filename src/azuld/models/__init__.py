"""Wire models for model_version 6 of the Azul dispatcher protocol.

The JSON keys are exactly those of the Go dispatcher (reference section 3). Unknown keys in input
are ignored, as Go does; output carries only the keys below, with empty optional fields left out.
`azuld.models.admin` holds the replies of azuld's own admin API (`/api/azuld/v1/...`).
"""

from azuld.models.admin import (
    FailedJob,
    PluginFailure,
    PluginKeySummary,
    Reoffer,
    ReofferOutcome,
    ReofferRecord,
)
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
    "FailedJob",
    "Feature",
    "FetchInfo",
    "GenericEvent",
    "PathNode",
    "PluginEntity",
    "PluginEvent",
    "PluginFailure",
    "PluginKeySummary",
    "PostFailure",
    "PostResponse",
    "Reoffer",
    "ReofferOutcome",
    "ReofferRecord",
    "Source",
    "StatusEntity",
    "StatusEvent",
    "StatusValue",
]
