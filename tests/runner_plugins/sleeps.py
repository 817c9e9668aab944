"""(e) Sleeps far past its run_timeout (run it with `-c run_timeout 2 -c heartbeat_interval 1`)."""

import time

from azul_runner import BinaryPlugin, Job, cmdline_run


class AzulPluginSleeps(BinaryPlugin):
    """Take far too long on every binary."""

    VERSION = "1.0"

    def execute(self, job: Job) -> None:
        time.sleep(300)


def main() -> None:
    cmdline_run(plugin=AzulPluginSleeps)


if __name__ == "__main__":
    main()
