"""The ``sparsecnn`` command.

Sub-commands live in ``sparsecnn.commands``: every module there that defines a click command
named ``command`` is registered, so each capability adds its command in its own module.

Errors are reported here, once for every command: an error of a documented type (bad values,
damaged files, unwritable or existing outputs, exhausted memory) is one ``Error:`` line on
stderr with exit code 1 (exit code 2 for a command line that cannot work); anything else is a
bug, reported as one line that says so.  ``sparsecnn --debug ...`` shows the traceback instead.
Every ``--out`` option is checked up front (a directory, writable) and every ``--device``
option must name a device of this machine (:mod:`sparsecnn.commands._limits`).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import click

from . import __version__, commands
from .commands._limits import Device, OutputDirectory

__all__ = ["cli", "main"]

# exceptions that are the package's documented ways of failing (docs/reliability.md, "Command
# line"): shown as their message, exit code 1
_FAILURES: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, MemoryError,
                                              FloatingPointError, OverflowError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _is_out_of_memory(error: BaseException) -> bool:
    # torch reports a failed allocation as RuntimeError (CPU) or OutOfMemoryError (CUDA)
    return isinstance(error, RuntimeError) and (
        type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(error)
        or "out of memory" in str(error))


def as_click_error(error: Exception) -> click.ClickException:
    """The one-line report of ``error`` (see the module docstring)."""
    if isinstance(error, MemoryError) or _is_out_of_memory(error):
        return click.ClickException(f"out of memory: {_one_line(error)}; use smaller sizes")
    if isinstance(error, _FAILURES):
        return click.ClickException(_one_line(error))
    return click.ClickException(
        f"internal error (a bug in sparsecnn {__version__}): {type(error).__name__}: "
        f"{_one_line(error)}; rerun as `sparsecnn --debug ...` for the traceback and report it")


class _Group(click.Group):
    """The command group, reporting every command's errors as described above."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            raise as_click_error(error) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparsecnn")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
def cli(debug: bool) -> None:
    """CNNs as hierarchical sparse coding and as hierarchical template matching."""


for _info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
    _module = importlib.import_module(f"{commands.__name__}.{_info.name}")
    _command = getattr(_module, "command", None)
    if isinstance(_command, click.Command):
        cli.add_command(_command)

# checked for every command, so that none fails after its work on an unusable --out/--device
for _command in cli.commands.values():
    for _param in _command.params:
        if "--out" in _param.opts:
            _param.type = OutputDirectory()
        elif "--device" in _param.opts:
            _param.type = Device()


def main() -> None:
    cli(prog_name="sparsecnn")


if __name__ == "__main__":
    main()
