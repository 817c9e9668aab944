"""(d) Raises an exception while processing."""

from azul_runner import BinaryPlugin, Job, cmdline_run


class SampleRejected(Exception):
    """What a buggy plugin might raise."""


class AzulPluginRaises(BinaryPlugin):
    """Fail on every binary with an exception."""

    VERSION = "1.0"

    def execute(self, job: Job) -> None:
        raise SampleRejected(f"cannot handle {job.event.entity.sha256}")


def main() -> None:
    cmdline_run(plugin=AzulPluginRaises)


if __name__ == "__main__":
    main()
