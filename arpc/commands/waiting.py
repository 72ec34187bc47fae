"""Waiting: ``when``, ``when-not``, ``when-time``, ``when-args`` (until the condition holds, ``--timeout`` or
Ctrl+C)."""

from __future__ import annotations

import time as _time
from collections.abc import Callable, Sequence
from typing import Any

import click

from ..errors import Failed, UsageError, WaitTimeout
from ..format import Result, time_string
from ..link import Entry
from .common import ARG_VAL, MACH, TIMEOUT, call, check_pairs, seconds, typed_pairs
from .registry import Cx, command


def _wait(entry: Entry, make: Callable[[Any], Any], timeout: float | None) -> None:
    """Wait for a waiter made by ``make(ctx)``; :class:`WaitTimeout` / :class:`Interrupted` otherwise."""
    from machine import Ctx

    ctx = Ctx()
    waiter = call(entry, lambda: make(ctx))
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


class _ArgsInHistory:
    """``when-args`` on a served machine that keeps history: its records are compared typed, and by text for the
    undeclared ``--val`` args (``--val 2`` matches a source's ``job=2``, see :mod:`arpc.argvals`). Quacks like
    a ``Waiter``."""

    def __init__(self, m: Any, state: str, want: dict[str, Any], by_text: set[str], ctx: Any) -> None:
        import threading

        from ..argvals import same, text_matches  # only when waiting for args: off the cold start's path

        self.same, self.text_matches = same, text_matches
        self.state, self.want, self.by_text = state, want, by_text
        self.index = m.index(state)
        self.tick: int | None = None
        self.hit = threading.Event()
        self.done = False
        self.stop = m.on_history(self._on, backlog=0)
        ctx.on_done(self.stop)

    def _on(self, r: dict[str, Any]) -> None:
        if r["result"] != "executed" or not (self.state in r["added"] or self.state in r["called"]):
            return
        args = r.get("args") or {}
        if all(k in args and (self.text_matches(args[k], v) if k in self.by_text else self.same(args[k], v))
               for k, v in self.want.items()):
            self.tick = r["ticks"][self.index]  # the state's tick at that transition, not the mirror's later one
            self.done = True
            self.hit.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.hit.wait(timeout)


def _when_args(m: Any, state: str, args: dict[str, Any], by_text: set[str], ctx: Any) -> Any:
    """Follow the history when the machine keeps one; else the server's own ``when_args`` (exact equality: an
    undeclared ``--val`` matches string args only)."""
    if hasattr(m, "on_history"):
        try:
            return _ArgsInHistory(m, state, args, by_text, ctx)
        except Exception as e:
            if getattr(e, "code", None) != "no_history":
                raise
    return m.when_args(state, args, ctx=ctx)


def _wait_states(cx: Cx, mach: str, states: tuple[str, ...], timeout: str | None, method: str) -> Result:
    """``when`` / ``when-not``: wait on the mirror's ``method``, then print the ticks."""
    limit = seconds(timeout)
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    m = cx.session.live(entry)
    wait_on = getattr(m, method)
    _wait(entry, lambda ctx: wait_on(*states, ctx=ctx), limit)
    return _ticks_result(entry, m, states)


def _ticks_result(entry: Entry, m: Any, states: Sequence[str]) -> Result:
    clock = {s: int(m.tick(s)) for s in states}
    line = str(clock[states[0]]) if len(states) == 1 else time_string(clock.values())
    return Result([line], {"machine": entry.id, "clock": clock})


@command("when", "Waiting", {"mach": "machine", "states": "states:inactive"},
         synopsis="MACH STATE... [--timeout 5s]", short_help="wait until active; prints the tick")
@MACH
@click.argument("states", nargs=-1, required=True)
@TIMEOUT
def cmd_when(cx: Cx, mach: str, states: tuple[str, ...], timeout: str | None) -> Result:
    """Wait until all STATES are active on MACH; prints the tick (several states: [1 3])."""
    return _wait_states(cx, mach, states, timeout, "when")


@command("when-not", "Waiting", {"mach": "machine", "states": "states:active"},
         synopsis="MACH STATE... [--timeout 5s]", short_help="wait until inactive")
@MACH
@click.argument("states", nargs=-1, required=True)
@TIMEOUT
def cmd_when_not(cx: Cx, mach: str, states: tuple[str, ...], timeout: str | None) -> Result:
    """Wait until all STATES are inactive on MACH; prints the tick (several states: [2 4])."""
    return _wait_states(cx, mach, states, timeout, "when_not")


@command("when-time", "Waiting", {"mach": "machine", "state": "states"}, synopsis="MACH -s STATE -t TICK...",
         short_help="wait until the ticks are reached")
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
    limit = seconds(timeout)
    entry = cx.session.resolve(mach)
    entry.check_states(state)
    m = cx.session.live(entry)
    _wait(entry, lambda ctx: m.when_time(list(state), ticks, ctx=ctx), limit)
    clock = {s: int(m.tick(s)) for s in state}
    return Result([time_string(clock.values())], {"machine": entry.id, "clock": clock})


@command("when-args", "Waiting",
         {"mach": "machine", "state": "states", "arg_names": "arg", "arg_vals": "val", "json_vals": "val"},
         synopsis="MACH STATE --arg N --val V", short_help="wait for an activation with these args")
@MACH
@click.argument("state")
@ARG_VAL
@TIMEOUT
def cmd_when_args(cx: Cx, mach: str, state: str, arg_names: tuple[str, ...], arg_vals: tuple[str, ...],
                  json_vals: tuple[str, ...], timeout: str | None) -> Result:
    """Wait until STATE is activated on MACH by a mutation whose args include the --arg/--val pairs (declared
    args compare typed, undeclared --val by text, --json-val as JSON)."""
    check_pairs(arg_names, arg_vals, json_vals)
    limit = seconds(timeout)
    entry = cx.session.resolve(mach)
    entry.check_states([state])
    typed, by_text = typed_pairs(arg_names, arg_vals, json_vals, entry.args if arg_names else {})
    args = typed or {}
    m = cx.session.live(entry)
    made: list[Any] = []

    def make(ctx: Any) -> Any:
        made.append(_when_args(m, state, args, by_text, ctx))
        return made[0]

    _wait(entry, make, limit)
    tick = getattr(made[0], "tick", None)
    tick = int(m.tick(state)) if tick is None else int(tick)
    return Result([str(tick)], {"machine": entry.id, "clock": {state: tick}, "args": args})
