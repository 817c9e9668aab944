"""(b) A child binary (the content reversed) and a text stream, for sourced binaries only."""

from azul_runner import BinaryPlugin, Feature, FeatureType, Job, add_settings, cmdline_run


class AzulPluginChildAndText(BinaryPlugin):
    """Extract the reversed content as a child and write a short text report."""

    VERSION = "1.0"
    # Only what was submitted, not our own (or anyone's) children: no endless chain of reversals.
    SETTINGS = add_settings(filter_allow_event_types=["sourced"])
    FEATURES = [Feature("transform", "How a child was derived from its parent", FeatureType.String)]

    def execute(self, job: Job) -> None:
        data = job.get_data().read()
        child = self.add_child_with_data({"action": "reversed"}, data[::-1])
        child.add_feature_values("transform", "reversed")
        self.add_text(f"reversed {len(data)} bytes")


def main() -> None:
    cmdline_run(plugin=AzulPluginChildAndText)


if __name__ == "__main__":
    main()
