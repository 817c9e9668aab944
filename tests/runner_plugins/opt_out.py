"""(c) Opts out of every binary, with a reason."""

from azul_runner import BinaryPlugin, Job, State, cmdline_run


class AzulPluginOptOut(BinaryPlugin):
    """Decline every binary."""

    VERSION = "1.0"

    def execute(self, job: Job) -> State:
        return State(State.Label.OPT_OUT, "not-for-me", "this plugin declines every binary")


def main() -> None:
    cmdline_run(plugin=AzulPluginOptOut)


if __name__ == "__main__":
    main()
