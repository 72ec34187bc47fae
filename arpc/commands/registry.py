"""The command table: :func:`command` declares a command once (click style) and files it in :data:`COMMANDS`;
``help`` and the cheatsheet are generated from the table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..format import Printer, Result
from ..session import Session

GROUPS = ("Mutations", "Waiting", "Checking", "REPL")
VAL_ORDER = "arpc.val_order"  # ctx.meta key: "val" / "json" per value of the line, in order


class Cx:
    """What a command runs with: the session, the printer, and whether this is the REPL."""

    def __init__(self, session: Session, printer: Printer, *, repl: bool = False) -> None:
        self.session = session
        self.printer = printer
        self.repl = repl
        self.depth = 0  # scripts running inside scripts
        self.where: str | None = None  # FILE:LINE of the line running (errors name it)

    def emit(self, result: Result) -> None:
        self.printer.emit(result)


class HelpRequested(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ArpcCommand(click.Command):
    """A table entry: a click command with a help group, a synopsis and completion hints for its parameters.

    ``complete`` maps a parameter name to what completes its values: ``machine``, ``states`` (of the command's
    machine), ``states:inactive`` / ``states:active``, ``all-states`` (union over machines), ``parent``,
    ``file``, ``address``, ``command``, ``val`` / ``arg``. ``synopsis`` is the cheatsheet's arguments part
    (default: the arguments of the click usage line).
    """

    def __init__(self, *args: Any, group: str = "Checking", complete: dict[str, str] | None = None,
                 synopsis: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group
        self.complete = complete or {}
        self.synopsis = synopsis

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # --val and --json-val pair with --arg names in command-line order, which click keeps per occurrence
        # only while parsing: read it from a first pass when both kinds are on the line
        if any(a.startswith("--json-val") for a in args) and any(a.startswith("--val") for a in args):
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
            ctx.meta[VAL_ORDER] = ["json" if p.name == "json_vals" else "val" for p in order
                                   if p.name in ("arg_vals", "json_vals")]
        return super().parse_args(ctx, args)

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
            if value and not ctx.resilient_parsing:
                raise HelpRequested(ctx.get_help())

        return click.Option(["--help"], is_flag=True, expose_value=False, is_eager=True, callback=show,
                            help="Show this message.")

    def synopsis_text(self) -> str:
        if self.synopsis is not None:
            return self.synopsis
        with click.Context(self, info_name=self.name) as ctx:
            return " ".join(p for p in self.collect_usage_pieces(ctx) if p != "[OPTIONS]")


COMMANDS: dict[str, ArpcCommand] = {}
ALIASES = {"quit": "exit", "\\q": "exit"}  # other names of a command (psql's \q); names are case-insensitive


def lookup(name: str) -> ArpcCommand | None:
    """The command called ``name`` (any case, or an alias)."""
    key = name.lower()
    return COMMANDS.get(ALIASES.get(key, key))


def command(name: str, group: str, complete: dict[str, str] | None = None, *, short_help: str,
            synopsis: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], ArpcCommand]:
    """Declare a command: ``short_help`` is its line in ``help`` and the cheatsheet, the docstring its help."""

    def deco(fn: Callable[..., Any]) -> ArpcCommand:
        cmd = click.command(name, cls=ArpcCommand, group=group, complete=complete, synopsis=synopsis,
                            short_help=short_help, context_settings={"max_content_width": 110},
                            **kwargs)(click.pass_obj(fn))
        assert isinstance(cmd, ArpcCommand)
        COMMANDS[name] = cmd
        return cmd

    return deco


def order_by_group() -> None:
    """Put the table in :data:`GROUPS` order (within a group: declaration order), the order completion offers."""
    ordered = sorted(COMMANDS.items(), key=lambda item: GROUPS.index(item[1].group))
    COMMANDS.clear()
    COMMANDS.update(ordered)


def help_lines() -> list[str]:
    """``help``: the commands by group, one line each."""
    lines = ["Commands (`help COMMAND` or `COMMAND --help` for details):"]
    for group in GROUPS:
        lines.append("")
        lines.append(f"{group}:")
        for name, cmd in COMMANDS.items():
            if cmd.group == group:
                lines.append(f"  {name:<14}{cmd.get_short_help_str(90)}")
    return lines


CHEATSHEET_TIPS = [
    "MACH: a machine id or `.` (the first connected machine of `list`).",
    "Filters: -a/-i STATE (active/inactive), -t/-T N (time sum min/max), -P PARENT, -r REGEXP, -I/-p/-s TEXT "
    "(id contains/prefix/suffix), -l N (limit), -f N (skip N machines of the listing).",
    "--arg/--val: pairs; a value takes the type the machine declares for the arg, else it is a string; "
    "--json-val V parses JSON (e.g. add . Foo --arg path --val /tmp/x --arg n --json-val 2).",
    "Exit codes: 0 ok, 1 failed, 2 usage, 3 connection, 4 canceled, 124 timeout, 130 interrupted.",
]


def cheatsheet_lines() -> list[str]:
    """``cheatsheet``: every command of the table with its synopsis and short help, then the tips."""
    lines = []
    for group in GROUPS:
        for name, cmd in COMMANDS.items():
            if cmd.group == group:
                usage = f"{name} {cmd.synopsis_text()}".rstrip()
                lines.append(f"{usage:<42}{cmd.get_short_help_str(120)}")
    return [*lines, "", *CHEATSHEET_TIPS]
