"""(a) Feature only: the length of the content stream."""

from azul_runner import BinaryPlugin, Feature, FeatureType, Job, cmdline_run


class AzulPluginFeatureOnly(BinaryPlugin):
    """Report the length of the content stream."""

    VERSION = "1.0"
    FEATURES = [
        Feature("file_length", "Length in bytes of the content stream", FeatureType.Integer)
    ]

    def execute(self, job: Job) -> None:
        self.add_feature_values("file_length", len(job.get_data().read()))


def main() -> None:
    cmdline_run(plugin=AzulPluginFeatureOnly)


if __name__ == "__main__":
    main()
