"""The ``pilegate`` command group: a thin entry that imports a subsystem only when its command runs."""

from __future__ import annotations

import importlib

import click

from pilegate import __version__

# command name -> "module:attribute" of a click.Command, imported on first use
COMMANDS: dict[str, str] = {
    "central": "central.app:central_command",
    "create-user": "central.app:create_user_command",
    "demo": "pilegate.demo:demo_command",
    "gateway": "gateway.daemon:gateway_command",
    "ingest": "central.ingest_main:ingest_command",
    "sim": "firmware_sim.cli:sim",
    "sim-fault": "firmware_sim.cli:sim_fault",
    "replay": "central.replay:replay_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules loaded only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise click.ClickException(f"{cmd_name}: not available ({exc})") from exc
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pilegate")
def main() -> None:
    """pilegate: run an EV charging station.

    Example:

        pilegate demo --time-scale 60
    """


if __name__ == "__main__":
    main()
