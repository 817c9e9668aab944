"""(f) A plugin whose work is done by two multiplugins, as azul-plugin-unbox's is.

The runner runs `execute` (which finds nothing: `completed-empty`), then each multiplugin, and
posts one status per multiplugin (authors `Multi-extract` and `Multi-feature`, with their results)
before the plugin's own status.
"""

from typing import Any

from azul_runner import BinaryPlugin, Feature, FeatureType, Job, add_settings, cmdline_run


class AzulPluginMulti(BinaryPlugin):
    """Split the content in two halves (a child) and report its first bytes (a feature)."""

    VERSION = "1.0"
    # Only what was submitted: no endless chain of halves.
    SETTINGS = add_settings(filter_allow_event_types=["sourced"])
    FEATURES = [
        Feature("first_bytes", "The first four bytes of the content, in hex", FeatureType.String),
        Feature("passwords", "The job's `passwords` source setting", FeatureType.String),
        Feature("part", "Which half of its parent a child is", FeatureType.String),
    ]

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.register_multiplugin("extract", None, self.extract)
        self.register_multiplugin("feature", None, self.feature)

    def execute(self, job: Job) -> None:
        """The plugin itself finds nothing; its multiplugins do the work."""

    def extract(self, job: Job) -> None:
        data = job.get_data().read()
        child = self.add_child_with_data({"action": "split"}, data[: len(data) // 2])
        child.add_feature_values("part", "first half")

    def feature(self, job: Job) -> None:
        self.add_feature_values("first_bytes", job.get_data().read(4).hex())
        # A source setting changes what the plugin reports (unbox tries the `passwords`).
        self.add_feature_values("passwords", job.event.source.settings.get("passwords", "(none)"))


def main() -> None:
    cmdline_run(plugin=AzulPluginMulti)


if __name__ == "__main__":
    main()
