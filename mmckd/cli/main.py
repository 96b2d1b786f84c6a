"""The `mmckd` command: a thin layer over the Python API. Subcommands are imported lazily."""

from __future__ import annotations

import importlib
import logging

import click

# name -> (module, attribute) of each subcommand
_COMMANDS = {
    "extract": ("mmckd.cli.extract", "extract"),
    "info": ("mmckd.cli.info", "info"),
    "fit": ("mmckd.cli.fit", "fit"),
    "predict": ("mmckd.cli.predict", "predict"),
    "import": ("mmckd.cli.import_", "import_"),
    "export": ("mmckd.cli.export", "export"),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [name for name, (mod, _) in _COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx, name):
        if name not in _COMMANDS:
            return None
        mod, attr = _COMMANDS[name]
        if importlib.util.find_spec(mod) is None:
            return None
        return getattr(importlib.import_module(mod), attr)


@click.group(cls=_LazyGroup)
@click.version_option(package_name="mmckd")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging on stderr.")
def cli(verbose: bool) -> None:
    """Multimodal sentiment analysis robust to missing modalities (MM-CKD)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
