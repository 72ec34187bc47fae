"""The command table: one set of click commands serving the one-shot CLI and the REPL.

Each command is a click command whose callback gets the :class:`Cx` (session + printer) and returns a
:class:`arpc.format.Result` (lines for plain / REPL output, one JSON document, an exit code). Streaming commands
(``watch``, ``script``) emit partial results themselves. :func:`dispatch` runs one command line and turns every
failure into a one-line error and an exit code; it never raises (except :class:`arpc.errors.ExitRepl`).
"""

from __future__ import annotations

import queue
import time as _time
from collections.abc import Callable, Sequence
from typing import Any

import click

from .errors import (
    CANCELED,
    CONNECTION,
    FAILED,
    INTERRUPTED,
    OK,
    ArpcError,
    ExitRepl,
    Failed,
    Interrupted,
    NoMatch,
    NotConnected,
    UnknownMachine,
    UsageError,
    WaitTimeout,
    is_state_error,
    is_transport_error,
)
from .format import (
    Printer,
    Result,
    fmt_args,
    list_rows,
    parse_duration,
    result_name,
    state_string,
    state_string_all,
    status_lines,
    time_string,
)
from .session import Entry, Filters, Session

GROUPS = ("Mutations", "Waiting", "Checking", "REPL")
MAX_SCRIPT_DEPTH = 8


class Cx:
    """What a command runs with: the session, the printer, and whether this is the REPL."""

    def __init__(self, session: Session, printer: Printer, *, repl: bool = False) -> None:
        self.session = session
        self.printer = printer
        self.repl = repl
        self.depth = 0

    def emit(self, result: Result) -> None:
        self.printer.emit(result)


class HelpRequested(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ArpcCommand(click.Command):
    """A table entry: a click command with a help group and completion hints for its parameters.

    ``complete`` maps a parameter name to what completes its values: ``machine``, ``states`` (of the command's
    machine), ``states:inactive`` / ``states:active``, ``all-states`` (union over machines), ``parent``,
    ``file``, ``address``, ``command``, ``val`` / ``arg``.
    """

    def __init__(self, *args: Any, group: str = "Checking", complete: dict[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group
        self.complete = complete or {}

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
            if value and not ctx.resilient_parsing:
                raise HelpRequested(ctx.get_help())

        return click.Option(["--help"], is_flag=True, expose_value=False, is_eager=True, callback=show,
                            help="Show this message.")


COMMANDS: dict[str, ArpcCommand] = {}


def command(name: str, group: str, complete: dict[str, str] | None = None,
            **kwargs: Any) -> Callable[[Callable[..., Any]], ArpcCommand]:
    def deco(fn: Callable[..., Any]) -> ArpcCommand:
        cmd = click.command(name, cls=ArpcCommand, group=group, complete=complete,
                            context_settings={"max_content_width": 110}, **kwargs)(click.pass_obj(fn))
        assert isinstance(cmd, ArpcCommand)
        COMMANDS[name] = cmd
        return cmd

    return deco


# ---------------------------------------------------------------------------------------------------- params

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
    click.option("--val", "arg_vals", multiple=True, metavar="VALUE", help="Argument value (a string)."),
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


def _filters(kw: dict[str, Any], disconn: bool = True) -> Filters:
    return Filters(active=tuple(kw["active"]), inactive=tuple(kw["inactive"]),
                   mtime_states=tuple(kw["mtime_states"]), mtime_min=kw["mtime_min"], mtime_max=kw["mtime_max"],
                   parent=kw["parent"], id_regexp=kw["id_regexp"], id_partial=kw["id_partial"],
                   id_prefix=kw["id_prefix"], id_suffix=kw["id_suffix"], limit=kw["limit"], skip=kw["skip"],
                   disconn=disconn)


def _pairs(names: Sequence[str], vals: Sequence[str]) -> dict[str, str] | None:
    if len(names) != len(vals):
        raise UsageError(f"--arg and --val must come in pairs ({len(names)} --arg, {len(vals)} --val)")
    if not names:
        return None
    for flag, texts in (("--arg", names), ("--val", vals)):
        for t in texts:
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # bytes that were not UTF-8 in argv (kept as surrogates by Python)
                shown = t.encode("utf-8", "backslashreplace").decode("ascii", "replace")
                raise UsageError(f"{flag} is not valid UTF-8: {_clip(shown)}") from None
    return dict(zip(names, vals, strict=True))


def _clip(text: str, limit: int = 80) -> str:
    """A value short enough for a one-line error."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _timeout(text: str | None) -> float | None:
    return None if text is None else parse_duration(text)


# ---------------------------------------------------------------------------------------------------- helpers


def _call(entry: Entry, fn: Callable[[], Any]) -> Any:
    """Run a machine call, mapping transport and state errors to arpc errors."""
    try:
        return fn()
    except ArpcError:
        raise
    except Exception as e:
        mapped = _arpc_error(entry, e)
        if mapped is None:
            raise
        raise mapped from e


def _arpc_error(entry: Entry, e: BaseException) -> ArpcError | None:
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


def _wait(cx: Cx, entry: Entry, make: Callable[[Any], Any], timeout: float | None) -> None:
    """Wait for a waiter made by ``make(ctx)``; :class:`WaitTimeout` / :class:`Interrupted` otherwise."""
    from machine import Ctx

    ctx = Ctx()
    waiter = _call(entry, lambda: make(ctx))
    deadline = None if timeout is None else _time.monotonic() + timeout
    try:
        while True:
            step = 0.25 if deadline is None else min(0.25, max(0.0, deadline - _time.monotonic()))
            if waiter.wait(step):
                return
            if waiter.done:  # ended without the condition: ctx, cancel, dispose
                raise Failed(f"wait ended: machine {entry.id} gone")
            if deadline is not None and _time.monotonic() >= deadline:
                raise WaitTimeout()
    finally:
        ctx.cancel()


def _mutation(cx: Cx, kind: str, mach: str, states: tuple[str, ...], names: Sequence[str],
              vals: Sequence[str]) -> Result:
    args = _pairs(names, vals)
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    m = cx.session.live(entry)
    r = _call(entry, lambda: getattr(m, kind)(*states, args=args))
    name = result_name(int(r))
    data: dict[str, Any] = {"machine": entry.id, "result": name}
    if name == "queued":
        data["queue_tick"] = int(r)
    return Result([name], data, CANCELED if name == "canceled" else OK)


# ---------------------------------------------------------------------------------------------------- mutations


@command("add", "Mutations", {"mach": "machine", "states": "states:inactive", "arg_names": "arg",
                              "arg_vals": "val"})
@MACH
@click.argument("states", nargs=-1, required=True)
@ARG_VAL
def cmd_add(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
            arg_vals: tuple[str, ...]) -> Result:
    """Activate STATES on MACH (--arg NAME --val VALUE pairs become the mutation's args).

    Prints executed, queued or canceled (exit 4)."""
    return _mutation(cx, "add", mach, states, arg_names, arg_vals)


@command("remove", "Mutations", {"mach": "machine", "states": "states:active", "arg_names": "arg",
                                 "arg_vals": "val"})
@MACH
@click.argument("states", nargs=-1, required=True)
@ARG_VAL
def cmd_remove(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
               arg_vals: tuple[str, ...]) -> Result:
    """Deactivate STATES on MACH. Prints executed, queued or canceled (exit 4)."""
    return _mutation(cx, "remove", mach, states, arg_names, arg_vals)


@command("set", "Mutations", {"mach": "machine", "states": "states", "arg_names": "arg", "arg_vals": "val"})
@MACH
@click.argument("states", nargs=-1)
@ARG_VAL
def cmd_set(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
            arg_vals: tuple[str, ...]) -> Result:
    """Make STATES the only active states of MACH (none: deactivate all)."""
    return _mutation(cx, "set", mach, states, arg_names, arg_vals)


@command("toggle", "Mutations", {"mach": "machine", "states": "states", "arg_names": "arg", "arg_vals": "val"})
@MACH
@click.argument("states", nargs=-1, required=True)
@ARG_VAL
def cmd_toggle(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
               arg_vals: tuple[str, ...]) -> Result:
    """Remove STATES from MACH when all are active, else add them."""
    return _mutation(cx, "toggle", mach, states, arg_names, arg_vals)


def _group(cx: Cx, kind: str, states: tuple[str, ...], kw: dict[str, Any]) -> Result:
    args = _pairs(kw.pop("arg_names"), kw.pop("arg_vals"))
    flt = _filters(kw)
    cx.session.ensure_open()
    targets = [e for e in flt.apply(cx.session.entries()) if e.connected and not e.unknown(states)]
    if not targets:
        raise NoMatch()
    counts = {"executed": 0, "queued": 0, "canceled": 0}
    per: dict[str, str] = {}
    errors: list[str] = []

    def record(e: Entry, outcome: Any) -> None:
        if isinstance(outcome, ArpcError):
            name = "canceled"
            errors.append(outcome.msg)
        else:
            name = result_name(int(outcome))
        counts[name] += 1
        per[e.id] = name

    # a client that can pipeline gets every mutation for its endpoint in one go (one round trip's worth of
    # waiting, not one per machine, and no mirrors to make); others go machine by machine
    by_conn: dict[int, list[Entry]] = {}
    for e in targets:
        by_conn.setdefault(id(e.endpoint), []).append(e)
    for group in by_conn.values():
        conn = group[0].endpoint.conn
        many = getattr(conn, "mutate_many", None)
        if many is not None and all(e.mirror is None or e.connected for e in group):
            ops = [(e.id, kind, states, args) for e in group]
            try:
                outcomes = _call(group[0], lambda: many(ops))  # noqa: B023 - called at once
            except ArpcError as err:
                outcomes = [err] * len(group)
            for e, out in zip(group, outcomes, strict=True):
                if isinstance(out, BaseException) and not isinstance(out, ArpcError):
                    out = _arpc_error(e, out) or Failed(str(out))
                record(e, out)
            continue
        for e in group:
            try:
                m = cx.session.live(e)
                fn = getattr(m, kind)
                record(e, _call(e, lambda: fn(*states, args=args)))  # noqa: B023 - called at once
            except ArpcError as err:
                record(e, err)
    lines = [f"Executed: {counts['executed']}", f"Queued: {counts['queued']}", f"Canceled: {counts['canceled']}"]
    data: dict[str, Any] = {**counts, "machines": per}
    if errors:
        data["errors"] = errors
    return Result(lines, data, CANCELED if counts["canceled"] else OK)


@command("group-add", "Mutations", {"states": "all-states", "arg_names": "arg", "arg_vals": "val",
                                    **FILTER_COMPLETE})
@click.argument("states", nargs=-1, required=True)
@FILTERS
@ARG_VAL
def cmd_group_add(cx: Cx, states: tuple[str, ...], **kw: Any) -> Result:
    """Activate STATES on every connected machine that matches the filters and has all STATES.

    Prints Executed / Queued / Canceled counts (exit 4 when any was canceled)."""
    return _group(cx, "add", states, kw)


@command("group-remove", "Mutations", {"states": "all-states", "arg_names": "arg", "arg_vals": "val",
                                       **FILTER_COMPLETE})
@click.argument("states", nargs=-1, required=True)
@FILTERS
@ARG_VAL
def cmd_group_remove(cx: Cx, states: tuple[str, ...], **kw: Any) -> Result:
    """Deactivate STATES on every connected machine that matches the filters and has all STATES."""
    return _group(cx, "remove", states, kw)


# ---------------------------------------------------------------------------------------------------- waiting


def _wait_states(cx: Cx, mach: str, states: tuple[str, ...], timeout: str | None, method: str) -> Result:
    """``when`` / ``when-not``: wait on the mirror's ``method``, then print the ticks."""
    limit = _timeout(timeout)
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    m = cx.session.live(entry)
    wait_on = getattr(m, method)
    _wait(cx, entry, lambda ctx: wait_on(*states, ctx=ctx), limit)
    return _ticks_result(entry, m, states)


def _ticks_result(entry: Entry, m: Any, states: Sequence[str]) -> Result:
    clock = {s: int(m.tick(s)) for s in states}
    line = str(clock[states[0]]) if len(states) == 1 else time_string(clock.values())
    return Result([line], {"machine": entry.id, "clock": clock})


@command("when", "Waiting", {"mach": "machine", "states": "states:inactive"})
@MACH
@click.argument("states", nargs=-1, required=True)
@TIMEOUT
def cmd_when(cx: Cx, mach: str, states: tuple[str, ...], timeout: str | None) -> Result:
    """Wait until all STATES are active on MACH; prints the tick (several states: [1 3])."""
    return _wait_states(cx, mach, states, timeout, "when")


@command("when-not", "Waiting", {"mach": "machine", "states": "states:active"})
@MACH
@click.argument("states", nargs=-1, required=True)
@TIMEOUT
def cmd_when_not(cx: Cx, mach: str, states: tuple[str, ...], timeout: str | None) -> Result:
    """Wait until all STATES are inactive on MACH; prints the tick (several states: [2 4])."""
    return _wait_states(cx, mach, states, timeout, "when_not")


@command("when-time", "Waiting", {"mach": "machine", "state": "states"})
@MACH
@click.option("-s", "--state", multiple=True, metavar="STATE", help="A state (pairs with -t).")
@click.option("-t", "--time", "times", multiple=True, metavar="TICK", help="Its tick to reach (pairs with -s).")
@TIMEOUT
def cmd_when_time(cx: Cx, mach: str, state: tuple[str, ...], times: tuple[str, ...],
                  timeout: str | None) -> Result:
    """Wait until each -s STATE reached at least its -t TICK on MACH; prints the current ticks."""
    if not state:
        raise UsageError("no states (-s) specified")
    if len(state) != len(times):
        raise UsageError("the number of states (-s) and times (-t) must be the same")
    ticks: list[int] = []
    for t in times:
        if not t.isdigit():
            raise UsageError(f"invalid time value: {t}")
        ticks.append(int(t))
    limit = _timeout(timeout)
    entry = cx.session.resolve(mach)
    entry.check_states(state)
    m = cx.session.live(entry)
    _wait(cx, entry, lambda ctx: m.when_time(list(state), ticks, ctx=ctx), limit)
    clock = {s: int(m.tick(s)) for s in state}
    return Result([time_string(clock.values())], {"machine": entry.id, "clock": clock})


@command("when-args", "Waiting", {"mach": "machine", "state": "states", "arg_names": "arg", "arg_vals": "val"})
@MACH
@click.argument("state")
@ARG_VAL
@TIMEOUT
def cmd_when_args(cx: Cx, mach: str, state: str, arg_names: tuple[str, ...], arg_vals: tuple[str, ...],
                  timeout: str | None) -> Result:
    """Wait until STATE is activated on MACH by a mutation whose args include the --arg/--val pairs."""
    args = _pairs(arg_names, arg_vals) or {}
    limit = _timeout(timeout)
    entry = cx.session.resolve(mach)
    entry.check_states([state])
    m = cx.session.live(entry)
    _wait(cx, entry, lambda ctx: m.when_args(state, args, ctx=ctx), limit)
    tick = int(m.tick(state))
    return Result([str(tick)], {"machine": entry.id, "clock": {state: tick}, "args": args})


# ---------------------------------------------------------------------------------------------------- checking


@command("mach", "Checking", {"mach": "machine"})
@MACH
@click.option("--all", "show_all", is_flag=True, help="Inactive states too: (Foo:1) [Bar:0 Baz:2].")
def cmd_mach(cx: Cx, mach: str, show_all: bool) -> Result:
    """The active states of MACH with their ticks: (Foo:1 Bar:3)."""
    entry = cx.session.resolve(mach)
    names, time = entry.names, entry.time()
    line = state_string_all(names, time) if show_all else state_string(names, time)
    active = [n for n, t in zip(names, time, strict=False) if t & 1]
    return Result([line], {"machine": entry.id, "active": active, "clock": dict(zip(names, time, strict=False)),
                           "connected": entry.connected})


@command("time", "Checking", {"mach": "machine", "states": "states"})
@MACH
@click.argument("states", nargs=-1)
@click.option("--sum", "total", is_flag=True, help="Print the sum of the ticks.")
def cmd_time(cx: Cx, mach: str, states: tuple[str, ...], total: bool) -> Result:
    """The ticks of MACH's states (or of STATES) in schema order: [0 1 0]."""
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    clock = entry.clock()
    if states:
        clock = {s: clock[s] for s in states}
    data: dict[str, Any] = {"machine": entry.id, "clock": clock}
    if total:
        data["sum"] = sum(clock.values())
        return Result([str(data["sum"])], data)
    return Result([time_string(clock.values())], data)


@command("inspect", "Checking", {"mach": "machine", "states": "states"})
@MACH
@click.argument("states", nargs=-1)
def cmd_inspect(cx: Cx, mach: str, states: tuple[str, ...]) -> Result:
    """MACH's states (or STATES) with ticks, flags and relations."""
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    m = cx.session.mirror(entry)
    text = _call(entry, lambda: m.inspect(*states))
    lines = [f"mach://{entry.id}", "", *text.rstrip("\n").split("\n")]
    schema = m.schema
    clock = dict(zip(m.state_names, m.time(), strict=False))
    info = []
    for name in states or m.state_names:
        st = schema[name]
        info.append({"name": name, "active": bool(clock[name] & 1), "tick": clock[name], "auto": bool(st.auto),
                     "multi": bool(st.multi), "add": list(st.add), "require": list(st.require),
                     "remove": list(st.remove), "after": list(st.after)})
    return Result(lines, {"machine": entry.id, "parent_id": entry.parent_id, "tags": entry.tags, "states": info})


@command("diagram", "Checking", {"mach": "machine"})
@MACH
def cmd_diagram(cx: Cx, mach: str) -> Result:
    """MACH's schema as a Mermaid flowchart (relations as edges, active states highlighted)."""
    from machine import diagram

    entry = cx.session.resolve(mach)
    m = cx.session.mirror(entry)
    text = _call(entry, lambda: diagram(m))
    return Result(text.rstrip("\n").split("\n"), {"machine": entry.id, "mermaid": text})


def _mach_json(num: int, e: Entry) -> dict[str, Any]:
    names, time = e.names, e.time()
    return {"num": num, "machine": e.id, "parent_id": e.parent_id, "tags": e.tags, "connected": e.connected,
            "address": e.endpoint.address, "time_sum": sum(time),
            "active": [n for n, t in zip(names, time, strict=False) if t & 1],
            "clock": dict(zip(names, time, strict=False))}


@command("list", "Checking", FILTER_COMPLETE)
@FILTERS
@click.option("-z", "--states", "show_states", type=click.BOOL, default=True, is_flag=False, flag_value=True,
              metavar="BOOL", help="Show active states (--states=false hides them).")
@click.option("-Z", "--states-all", is_flag=True, help="Show inactive states too.")
@click.option("-d", "--disconn", type=click.BOOL, default=True, is_flag=False, flag_value=True, metavar="BOOL",
              help="Include disconnected machines (--disconn=false hides them).")
def cmd_list(cx: Cx, show_states: bool, states_all: bool, disconn: bool, **kw: Any) -> Result:
    """List the machines, sorted by id, with the listing filters.

    Two lines each: `N. <id> t<time sum>` and `<C|D>[R|S]: <active states>` (C connected, D not; R when its
    Ready is active, else S when Start is)."""
    cx.session.ensure_open()
    entries = _filters(kw, disconn).apply(cx.session.entries())
    lines: list[str] = []
    for num, e in enumerate(entries, 1):
        names, time = e.names, e.time()
        if states_all:
            string = state_string_all(names, time)
        elif show_states:
            string = state_string(names, time)
        else:
            string = ""
        lines.extend(list_rows(num, e.id, sum(time), e.flags(), string))
    return Result(lines, [_mach_json(n, e) for n, e in enumerate(entries, 1)])


@command("status", "Checking")
def cmd_status(cx: Cx) -> Result:
    """Counts of connected, connecting and disconnected machines."""
    cx.session.ensure_open()
    st = cx.session.status()
    return Result(status_lines(st.connected, st.connecting, st.disconnected, st.total),
                  {"connected": st.connected, "connecting": st.connecting, "disconnected": st.disconnected,
                   "total": st.total})


@command("watch", "Checking", {"mach": "machine", **FILTER_COMPLETE})
@click.argument("mach", required=False, metavar="[MACH]")
@FILTERS
@click.option("-n", "--count", type=click.IntRange(min=1), metavar="N", help="Stop after N transitions.")
@click.option("--duration", metavar="DUR", help="Stop after DUR (500ms, 5s, 1m).")
def cmd_watch(cx: Cx, mach: str | None, count: int | None, duration: str | None, **kw: Any) -> Result:
    """Print every transition of MACH (or of every machine matching the filters) until Ctrl+C.

    Each line: time, machine, +added -removed *re-entered states, (args), time sum."""
    limit = _timeout(duration)
    if mach is not None:
        targets = [cx.session.resolve(mach)]
    else:
        cx.session.ensure_open()
        targets = [e for e in _filters(kw).apply(cx.session.entries()) if e.connected]
        if not targets:
            raise NoMatch()
    q: queue.SimpleQueue[tuple[str, float, dict[str, Any]]] = queue.SimpleQueue()
    unsubs = []
    try:
        for e in targets:
            unsubs.append(_call(e, lambda: _watch_one(cx, e, q)))  # noqa: B023 - called at once
        seen = 0
        deadline = None if limit is None else _time.monotonic() + limit
        while count is None or seen < count:
            step = 0.25 if deadline is None else min(0.25, deadline - _time.monotonic())
            if step <= 0:
                break
            try:
                mid, at, u = q.get(timeout=step)
            except queue.Empty:
                continue
            seen += 1
            cx.emit(_watch_result(mid, at, u))
    finally:
        for unsub in unsubs:
            try:
                unsub()
            except Exception:  # noqa: BLE001
                pass
    return Result([], None)


def _watch_one(cx: Cx, e: Entry, q: queue.SimpleQueue[tuple[str, float, dict[str, Any]]]) -> Callable[[], None]:
    from .watch import subscribe

    mid = e.id

    def put(update: dict[str, Any]) -> None:
        q.put((mid, _time.time(), update))

    return subscribe(cx.session.mirror(e), put)


def _watch_result(mid: str, at: float, u: dict[str, Any]) -> Result:
    stamp = _time.strftime("%H:%M:%S", _time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"
    parts = [stamp, mid]
    parts += [f"+{s}" for s in u.get("added", ())]
    parts += [f"-{s}" for s in u.get("removed", ())]
    parts += [f"*{s}" for s in u.get("ticked", ())]
    args: dict[str, Any] = {}
    for mut in u.get("mutations") or ():
        args.update(mut.get("args") or {})
    args = {k: v for k, v in args.items() if k != "err_trace"}
    if args:
        parts.append(fmt_args(args))
    time = list(u.get("time") or ())
    parts.append(f"t{sum(time)}")
    data = {"machine": mid, "at": at, "added": list(u.get("added", ())), "removed": list(u.get("removed", ())),
            "ticked": list(u.get("ticked", ())), "args": args, "time": time,
            "mutations": list(u.get("mutations") or ())}
    return Result([" ".join(parts)], data)


# ---------------------------------------------------------------------------------------------------- REPL


@command("script", "REPL", {"file": "file"})
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-k", "--keep-going", is_flag=True, help="Run every line; exit with the first failure's code.")
def cmd_script(cx: Cx, file: str, keep_going: bool) -> Result:
    """Run FILE: one command a line, # comments; stops at the first failure and exits with its code."""
    if cx.depth >= MAX_SCRIPT_DEPTH:
        raise Failed(f"scripts nested too deep: {file}")
    try:
        with open(file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise Failed(f"cannot read script: {file}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise Failed(f"cannot read script: {file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    first_err = OK
    cx.depth += 1
    try:
        for line in lines:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                code = run_line(cx, line)
            except ExitRepl:
                break
            if code != OK:
                if not keep_going or code == INTERRUPTED:  # Ctrl+C stops a script, --keep-going or not
                    return Result([], None, code)
                first_err = first_err or code
    finally:
        cx.depth -= 1
    return Result([], None, first_err)


CHEATSHEET = [
    "add MACH STATE... [--arg N --val V]...   activate states (prints executed / queued / canceled)",
    "remove MACH STATE...                      deactivate states",
    "set MACH [STATE...]                       make exactly these states active",
    "toggle MACH STATE...                      remove if all active, else add",
    "group-add STATE... [filters]             add on every matching machine (group-remove: remove)",
    "when MACH STATE... [--timeout 5s]         wait until active; prints the tick",
    "when-not MACH STATE... [--timeout 5s]     wait until inactive",
    "when-time MACH -s STATE -t TICK...        wait until the ticks are reached",
    "when-args MACH STATE --arg N --val V      wait for an activation with these args",
    "mach MACH [--all]                         (Foo:1 Bar:3) / (Foo:1) [Bar:0]",
    "time MACH [STATE...] [--sum]              [0 1 0] / 1",
    "inspect MACH [STATE...]                   states, ticks, flags and relations",
    "list [filters] [-Z]                       machines: N. id tSUM / C|D[R|S]: states",
    "watch [MACH] [filters] [-n N]             stream transitions until Ctrl+C",
    "status                                    connected / connecting / disconnected",
    "script FILE                               run commands from FILE, stop at the first failure",
    "connect [ADDR]                            connect ADDR, or retry every disconnected address",
    "help [COMMAND]                            groups and commands / one command's help",
    "",
    "MACH: a machine id or `.` (the first connected machine of `list`).",
    "Filters: -a/-i STATE (active/inactive), -t/-T N (time sum min/max), -P PARENT, -r REGEXP, -I/-p/-s TEXT "
    "(id contains/prefix/suffix), -l N (limit), -f N (skip).",
    "--arg/--val: pairs, values are strings (e.g. add . Foo --arg path --val /tmp/x).",
    "Exit codes: 0 ok, 1 failed, 2 usage, 3 connection, 4 canceled, 124 timeout, 130 interrupted.",
]


@command("cheatsheet", "REPL")
def cmd_cheatsheet(cx: Cx) -> Result:
    """One line per command, with tips."""
    return Result.text(CHEATSHEET)


@command("connect", "REPL", {"address": "address"})
@click.argument("address", required=False, metavar="[ADDR]")
def cmd_connect(cx: Cx, address: str | None) -> Result:
    """Connect ADDR (host:port or a URI); without it, retry every address that is not connected."""
    s = cx.session
    if address is not None:
        ep = s.add_address(address)
        s.reconnect()
        if not ep.connected:
            raise NotConnected(f"cannot connect to {ep.address}" + (f": {ep.error}" if ep.error else ""))
        ids = [i["id"] for i in ep.infos]
        return Result([f"connected to {ep.address}: {' '.join(ids) or '(no machines)'}"],
                      {"address": ep.address, "machines": ids})
    s.opened = True
    st = s.reconnect()
    return Result(status_lines(st.connected, st.connecting, st.disconnected, st.total),
                  {"connected": st.connected, "connecting": st.connecting, "disconnected": st.disconnected,
                   "total": st.total}, OK if st.connected else CONNECTION)


@command("help", "REPL", {"name": "command"})
@click.argument("name", required=False, metavar="[COMMAND]")
def cmd_help(cx: Cx, name: str | None) -> Result:
    """The commands by group, or the help of COMMAND."""
    if name is not None:
        cmd = COMMANDS.get(name)
        if cmd is None:
            raise UsageError(f"unknown command: {name}")
        with click.Context(cmd, info_name=name) as ctx:
            return Result.text(cmd.get_help(ctx).splitlines())
    return Result.text(help_lines())


def help_lines() -> list[str]:
    lines = ["Commands (`help COMMAND` or `COMMAND --help` for details):"]
    for group in GROUPS:
        lines.append("")
        lines.append(f"{group}:")
        for name, cmd in COMMANDS.items():
            if cmd.group == group:
                lines.append(f"  {name:<14}{cmd.get_short_help_str(90)}")
    return lines


@command("exit", "REPL")
def cmd_exit(cx: Cx) -> Result:
    """Leave the REPL (Ctrl+D does too)."""
    raise ExitRepl(OK)


# ---------------------------------------------------------------------------------------------------- dispatch


def split_line(line: str) -> list[str]:
    import shlex

    try:
        return shlex.split(line, comments=True)
    except ValueError as e:
        raise UsageError(f"cannot parse line: {e}") from None


def run_line(cx: Cx, line: str) -> int:
    try:
        words = split_line(line)
    except ArpcError as e:
        cx.printer.error(e)
        return e.code
    return dispatch(cx, words)


def dispatch(cx: Cx, words: Sequence[str]) -> int:
    """Run one command (``words[0]`` + its arguments); prints the result or a one-line error; the exit code."""
    if not words:
        return OK
    name, rest = words[0], list(words[1:])
    try:
        cmd = COMMANDS.get(name)
        if cmd is None:
            raise UsageError(f"unknown command: {name}" + _suggest(name))
        try:
            ctx = cmd.make_context(name, rest, obj=cx)
            with ctx:
                result = cmd.invoke(ctx)
        except HelpRequested as h:
            result = Result.text(h.text.splitlines())
        except click.UsageError as e:
            raise UsageError(f"{name}: {e.format_message()}") from None
        except click.exceptions.Exit as e:
            return int(e.exit_code)
        except click.Abort:
            raise Interrupted() from None
        if result is None:
            return OK
        cx.emit(result)
        return int(result.code)
    except ExitRepl:
        raise
    except ArpcError as e:
        cx.printer.error(e)
        return e.code
    except KeyboardInterrupt:
        e2 = Interrupted()
        cx.printer.error(e2)
        return INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad line never kills the REPL
        err = _map_exception(e)
        cx.printer.error(err)
        return err.code


def _map_exception(e: Exception) -> ArpcError:
    if isinstance(e.__context__, KeyboardInterrupt):
        # a second Ctrl+C during the first one's cleanup (e.g. inside threading's lock handling)
        return Interrupted()
    if isinstance(e, UnicodeError):
        return UsageError(f"not valid text (UTF-8): {e}")
    if is_state_error(e):
        return Failed(str(e))
    if is_transport_error(e):
        return NotConnected(str(e) or "not connected")
    return ArpcError(f"internal error: {type(e).__name__}: {e}", FAILED)


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


__all__ = ["CHEATSHEET", "COMMANDS", "GROUPS", "ArpcCommand", "Cx", "HelpRequested", "dispatch", "help_lines",
           "run_line", "split_line"]
