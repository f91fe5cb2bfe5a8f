"""Command-line parsing that refuses an option whose value is missing because another option took its place.

Click gives an option that takes a value whatever token follows it, even another option:
``spfem edit talk.mp4 --side-by-side -o out.mp4`` wrote the side-by-side video to a file named ``-o`` and
took ``out.mp4`` for a second input (then complained that several inputs need a folder). ``-e -o x.mp4``
asked for an emotion called ``-o``. A value that is exactly one of the command's own option names is
never meant as a value, so it is refused as a usage error naming both options. Anything else starting
with ``-`` (a negative number, a file really called ``-x.mp4``) still passes, as Click allows.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer
from typer.core import TyperGroup, TyperOption

# Click's usage error (exit 2, the command's usage line above it), reached through typer's public names: typer
# vendors Click since 0.20 and imports it before that, and BadParameter is a UsageError in both.
UsageError = typer.BadParameter.__bases__[0]


def _option_names(command) -> tuple[set[str], set[str]]:
    """(names of the options that take a value, names of every option) of ``command``, --help included."""
    valued, every = set(), {"--help"}
    for param in command.params:
        if not isinstance(param, TyperOption):
            continue
        names = set(param.opts) | set(param.secondary_opts)
        every |= names
        if not param.is_flag and not param.count:
            valued |= names
    return valued, every


def option_taken_as_value(command, args: Sequence[str]) -> tuple[str, str] | None:
    """The first (option, option that follows it) where ``args`` give an option of ``command`` another of
    its option names as value; None when there is none. ``--`` ends the options; ``--opt=value`` carries
    its own value."""
    valued, every = _option_names(command)
    for here, following in zip(args, args[1:], strict=False):
        if here == "--":
            break
        if here in valued and (following in every or following.split("=", 1)[0] in valued):
            return here, following
    return None


class StrictValueGroup(TyperGroup):
    """A command group whose commands refuse an option value that is another of their options (see the module)."""

    def resolve_command(self, ctx, args: list[str]):
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None and not isinstance(command, TyperGroup):
            clash = option_taken_as_value(command, rest)
            if clash is not None:
                option, following = clash
                sub = command.context_class(command, info_name=name, parent=ctx)
                raise UsageError(f"{option} needs a value, but the option {following} follows it: "
                                 f"give the value right after {option}", ctx=sub)
        return name, command, rest
