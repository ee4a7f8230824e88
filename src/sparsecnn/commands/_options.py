"""Option parsing shared by the commands."""

from __future__ import annotations

import math

import click

__all__ = ["comma_separated"]


def comma_separated(text: str, name: str, *, integer: bool = True, example: str = "0,1",
                    minimum: float | None = None) -> tuple[int | float, ...]:
    """The numbers of a comma-separated option value such as ``"32,64"`` (empty parts
    skipped); at least one, and all finite and ``>= minimum`` when ``minimum`` is given.
    Raises ``click.BadParameter`` naming the option ``name``."""
    kind = "integer" if integer else "number"
    try:
        values = tuple((int if integer else float)(part) for part in text.split(",")
                       if part.strip())
    except ValueError:
        raise click.BadParameter(f"{name} must be comma-separated {kind}s such as {example}; "
                                 f"got {text!r}") from None
    if minimum is not None:
        if not values or any(not math.isfinite(v) or v < minimum for v in values):
            raise click.BadParameter(f"{name} must list at least one finite value >= "
                                     f"{minimum:g}; got {text!r}")
    elif not values:
        raise click.BadParameter(f"{name} must list at least one {kind}; got {text!r}")
    return values
