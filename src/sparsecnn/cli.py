"""The ``sparsecnn`` command.

Sub-commands live in ``sparsecnn.commands``: every module there that defines a click command
named ``command`` is registered, so each capability adds its command in its own module.
"""

from __future__ import annotations

import importlib
import pkgutil

import click

from . import __version__, commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparsecnn")
def cli() -> None:
    """CNNs as hierarchical sparse coding and as hierarchical template matching."""


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
    _module = importlib.import_module(f"{commands.__name__}.{_info.name}")
    _command = getattr(_module, "command", None)
    if isinstance(_command, click.Command):
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="sparsecnn")
