"""What the command groups share: the click parameters and their converters, and the mapping of a machine call's
exceptions to arpc errors."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from ..errors import ArpcError, Failed, NotConnected, UnknownMachine, UsageError, is_state_error, is_transport_error
from ..filters import Filters
from ..format import parse_duration
from ..link import Entry
from ..session import Session
from .registry import VAL_ORDER

Deco = Callable[[Callable[..., Any]], Callable[..., Any]]


def _stack(*decos: Deco) -> Deco:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for d in reversed(decos):
            fn = d(fn)
        return fn

    return apply


MACH = click.argument("mach", metavar="MACH")
ARG_VAL = _stack(
    click.option("--arg", "arg_names", multiple=True, metavar="NAME", help="Argument name (pairs with --val)."),
    click.option("--val", "arg_vals", multiple=True, metavar="VALUE",
                 help="Argument value: of the type the machine declares for the arg, else a string."),
    click.option("--json-val", "json_vals", multiple=True, metavar="JSON",
                 help="Argument value as JSON (instead of a --val)."),
)
TIMEOUT = click.option("--timeout", metavar="DUR", help="Give up after DUR (500ms, 5s, 1m); exit 124.")
FILTERS = _stack(
    click.option("-a", "--active", multiple=True, metavar="STATE", help="Only machines with STATE active."),
    click.option("-i", "--inactive", multiple=True, metavar="STATE", help="Only machines with STATE inactive."),
    click.option("-m", "--mtime-states", multiple=True, metavar="STATE",
                 help="States whose ticks -t/-T sum (default: all)."),
    click.option("-t", "--mtime-min", type=click.IntRange(min=0), metavar="N", help="Time sum at least N."),
    click.option("-T", "--mtime-max", type=click.IntRange(min=0), metavar="N", help="Time sum at most N."),
    click.option("-P", "--parent", metavar="ID", help="Only children of machine ID."),
    click.option("-r", "--id-regexp", metavar="RE", help="ID matches the regexp (unanchored)."),
    click.option("-I", "--id-partial", metavar="TEXT", help="ID contains TEXT."),
    click.option("-p", "--id-prefix", metavar="TEXT", help="ID starts with TEXT."),
    click.option("-s", "--id-suffix", metavar="TEXT", help="ID ends with TEXT."),
    click.option("-l", "--limit", type=click.IntRange(min=0), metavar="N", help="At most N machines (0: no limit)."),
    click.option("-f", "--from", "skip", type=click.IntRange(min=0), default=0, metavar="N",
                 help="Skip the first N machines of the listing."),
)
FILTER_COMPLETE = {"active": "all-states", "inactive": "all-states", "mtime_states": "all-states",
                   "parent": "parent"}


def filters_of(kw: dict[str, Any], disconn: bool = True) -> Filters:
    """The :class:`Filters` of a command's ``FILTERS`` options."""
    return Filters(active=tuple(kw["active"]), inactive=tuple(kw["inactive"]),
                   mtime_states=tuple(kw["mtime_states"]), mtime_min=kw["mtime_min"], mtime_max=kw["mtime_max"],
                   parent=kw["parent"], id_regexp=kw["id_regexp"], id_partial=kw["id_partial"],
                   id_prefix=kw["id_prefix"], id_suffix=kw["id_suffix"], limit=kw["limit"], skip=kw["skip"],
                   disconn=disconn)


def listing(session: Session, flt: Filters) -> list[Entry]:
    """The machines matching ``flt`` (connecting first); a filter state no machine has is an error."""
    session.ensure_open()
    entries = session.entries()
    flt.check_states(entries)
    return flt.apply(entries)


def typed_pairs(names: Sequence[str], vals: Sequence[str], json_vals: Sequence[str],
                declared: Mapping[str, Any]) -> tuple[dict[str, Any] | None, set[str]]:
    """The ``--arg``/``--val``/``--json-val`` pairs as the mutation's args (None: no pairs), converted as
    :mod:`arpc.argvals` says, and the names given as undeclared text; a usage error when they do not pair up or
    a value does not convert."""
    check_pairs(names, vals, json_vals)
    from ..argvals import typed_args

    ctx = click.get_current_context(silent=True)
    order = ctx.meta.get(VAL_ORDER) if ctx is not None else None
    return typed_args(names, vals, json_vals, order, declared)


def check_pairs(names: Sequence[str], vals: Sequence[str], json_vals: Sequence[str]) -> None:
    """A usage error when the names and values do not pair up or are not valid UTF-8 (before connecting)."""
    if len(names) != len(vals) + len(json_vals):
        if json_vals:
            raise UsageError(f"--arg and --val/--json-val must come in pairs ({len(names)} --arg, "
                             f"{len(vals)} --val, {len(json_vals)} --json-val)")
        raise UsageError(f"--arg and --val must come in pairs ({len(names)} --arg, {len(vals)} --val)")
    for flag, texts in (("--arg", names), ("--val", vals), ("--json-val", json_vals)):
        for t in texts:
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # bytes that were not UTF-8 in argv (kept as surrogates by Python)
                shown = t.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                raise UsageError(f"{flag} is not valid UTF-8: {clip(shown)}") from None


def clip(text: str, limit: int = 80) -> str:
    """A value short enough for a one-line error."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def seconds(text: str | None) -> float | None:
    """A ``--timeout`` / ``--duration`` value in seconds (None: none given)."""
    return None if text is None else parse_duration(text)


def call(entry: Entry, fn: Callable[[], Any]) -> Any:
    """Run a machine call, mapping transport and state errors to arpc errors."""
    try:
        return fn()
    except ArpcError:
        raise
    except Exception as e:
        mapped = arpc_error(entry, e)
        if mapped is None:
            raise
        raise mapped from e


def arpc_error(entry: Entry, e: BaseException) -> ArpcError | None:
    """The arpc error for a machine call's exception (None: not one of ours, let it propagate)."""
    if is_state_error(e):
        return Failed(str(e))
    if is_transport_error(e):
        code = getattr(e, "code", "")
        if code == "unknown_machine":  # disposed or removed on the server
            return UnknownMachine(entry.id)
        if code in ("no_access", "invalid_params", "unknown_state", "limit", "internal"):
            return Failed(str(e) or code)
        return NotConnected(f"machine {entry.id} not connected")
    if isinstance(e, (ConnectionError, TimeoutError)):
        return NotConnected(f"machine {entry.id} not connected")
    return None
