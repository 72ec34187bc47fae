"""Mutations: ``add``, ``remove``, ``set``, ``toggle`` on one machine, ``group-add`` / ``group-remove`` on every
machine matching the listing filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from ..errors import CANCELED, OK, ArpcError, Failed, NoMatch, UnknownMachine, UnknownState
from ..format import Result, result_name
from ..link import Entry, Link
from .common import (
    ARG_VAL,
    FILTER_COMPLETE,
    FILTERS,
    MACH,
    arpc_error,
    call,
    check_pairs,
    filters_of,
    listing,
    typed_pairs,
)
from .registry import Cx, command


def _mutation(cx: Cx, kind: str, mach: str, states: tuple[str, ...], names: Sequence[str],
              vals: Sequence[str], json_vals: Sequence[str]) -> Result:
    check_pairs(names, vals, json_vals)
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    args, _ = typed_pairs(names, vals, json_vals, entry.args if names else {})
    m = cx.session.live(entry)
    r = call(entry, lambda: getattr(m, kind)(*states, args=args))
    name = result_name(int(r))
    data: dict[str, Any] = {"machine": entry.id, "result": name}
    if name == "queued":
        data["queue_tick"] = int(r)
    if name != "canceled":
        return Result([name], data, OK)
    from .history import cancel_reason  # one more round trip, only for a canceled mutation

    reason = cancel_reason(m, states)
    if reason is None:  # the machine keeps no history: the result alone
        return Result([name], data, CANCELED)
    data["reason"] = reason
    return Result([f"canceled: {reason}"], data, CANCELED)


_ONE = {"mach": "machine", "arg_names": "arg", "arg_vals": "val", "json_vals": "val"}


@command("add", "Mutations", {**_ONE, "states": "states:inactive"}, synopsis="MACH STATE... [--arg N --val V]...",
         short_help="activate states (prints executed / queued / canceled)")
@MACH
@click.argument("states", nargs=-1, required=True)
@ARG_VAL
def cmd_add(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
            arg_vals: tuple[str, ...], json_vals: tuple[str, ...]) -> Result:
    """Activate STATES on MACH (--arg NAME --val VALUE pairs become the mutation's args).

    Prints executed, queued or canceled (exit 4)."""
    return _mutation(cx, "add", mach, states, arg_names, arg_vals, json_vals)


@command("remove", "Mutations", {**_ONE, "states": "states:active"}, synopsis="MACH STATE...",
         short_help="deactivate states")
@MACH
@click.argument("states", nargs=-1, required=True)
@ARG_VAL
def cmd_remove(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
               arg_vals: tuple[str, ...], json_vals: tuple[str, ...]) -> Result:
    """Deactivate STATES on MACH. Prints executed, queued or canceled (exit 4)."""
    return _mutation(cx, "remove", mach, states, arg_names, arg_vals, json_vals)


@command("set", "Mutations", {**_ONE, "states": "states"}, synopsis="MACH [STATE...]",
         short_help="make exactly these states active")
@MACH
@click.argument("states", nargs=-1)
@ARG_VAL
def cmd_set(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
            arg_vals: tuple[str, ...], json_vals: tuple[str, ...]) -> Result:
    """Make STATES the only active states of MACH (none: deactivate all)."""
    return _mutation(cx, "set", mach, states, arg_names, arg_vals, json_vals)


@command("toggle", "Mutations", {**_ONE, "states": "states"}, synopsis="MACH STATE...",
         short_help="remove if all active, else add")
@MACH
@click.argument("states", nargs=-1, required=True)
@ARG_VAL
def cmd_toggle(cx: Cx, mach: str, states: tuple[str, ...], arg_names: tuple[str, ...],
               arg_vals: tuple[str, ...], json_vals: tuple[str, ...]) -> Result:
    """Remove STATES from MACH when all are active, else add them."""
    return _mutation(cx, "toggle", mach, states, arg_names, arg_vals, json_vals)


def _group(cx: Cx, kind: str, states: tuple[str, ...], kw: dict[str, Any]) -> Result:
    names, vals, json_vals = kw.pop("arg_names"), kw.pop("arg_vals"), kw.pop("json_vals")
    check_pairs(names, vals, json_vals)
    flt = filters_of(kw)
    # ids alone choose the machines (a fleet's -d DIR, id filters, no --arg to type): the daemons are not asked
    # for their listings first; each checks the states of its machines, and one lacking them is left out
    unlisted = not cx.repl and not names and flt.by_id_only() and cx.session.unlisted()
    work: list[tuple[Link, list[str], list[Entry] | None]] = []  # a link, the ids it gets, their entries
    args = None
    if unlisted:
        cx.session.ensure_open()
        for link in cx.session.links():
            ids = flt.ids([i["id"] for i in link.infos]) if link.connected else []
            if ids:
                work.append((link, ids, None))
    else:
        targets = _targets(listing(cx.session, flt), states)
        from ..argvals import merged

        args, _ = typed_pairs(names, vals, json_vals, merged([e.args for e in targets]) if names else {})
        by_link: dict[int, list[Entry]] = {}
        for e in targets:
            by_link.setdefault(id(e.link), []).append(e)
        work = [(g[0].link, [e.id for e in g], g) for g in by_link.values()]
    if not work:
        raise NoMatch()
    counts = {"executed": 0, "queued": 0, "canceled": 0}
    per: dict[str, str] = {}
    errors: list[str] = []

    def record(mid: str, outcome: Any) -> None:
        if isinstance(outcome, ArpcError):
            name = "canceled"
            errors.append(outcome.msg)
        else:
            name = result_name(int(outcome))
        counts[name] += 1
        per[mid] = name

    # a client that can batch gets every mutation for its link in one go (one round trip's worth of waiting, not
    # one per machine, and no mirrors to make); others go machine by machine
    def pipelined(item: tuple[Link, list[str], list[Entry] | None]) -> list[Any] | None:
        # one request naming every machine of the link (a server without it: pipelined, one a machine)
        link, ids, group = item
        conn = link.conn
        grouped, many = getattr(conn, "mutate_group", None), getattr(conn, "mutate_many", None)
        if (grouped is None and many is None) or not all(e.mirror is None or e.connected for e in group or ()):
            return None
        first = group[0] if group else Entry(link, {"id": ids[0]})
        try:
            if grouped is not None:
                return list(call(first, lambda: grouped(kind, states, ids, args)))
            ops = [(mid, kind, states, args) for mid in ids]
            return list(call(first, lambda: many(ops)))  # type: ignore[misc]
        except ArpcError as err:
            return [err] * len(ids)

    if len(work) > 1:  # links at once: a fleet's daemons work in parallel, not one after another
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(32, len(work)), thread_name_prefix="arpc-group") as pool:
            piped = list(pool.map(pipelined, work))
    else:
        piped = [pipelined(w) for w in work]
    for (link, ids, group), outcomes in zip(work, piped, strict=True):
        if outcomes is not None:
            for mid, out in zip(ids, outcomes, strict=True):
                if isinstance(out, int):  # a Result or a queue tick: most of a fleet's outcomes
                    record(mid, out)
                    continue
                if unlisted and _lacks(out):
                    continue  # not a target: as if the listing had left it out
                if isinstance(out, BaseException) and not isinstance(out, ArpcError):
                    out = arpc_error(Entry(link, {"id": mid}), out) or Failed(str(out))
                record(mid, out)
            continue
        for e in group or ():
            try:
                m = cx.session.live(e)
                fn = getattr(m, kind)
                record(e.id, call(e, lambda: fn(*states, args=args)))  # noqa: B023 - called at once
            except ArpcError as err:
                record(e.id, err)
    if unlisted and not per:
        raise NoMatch()
    lines = [f"Executed: {counts['executed']}", f"Queued: {counts['queued']}", f"Canceled: {counts['canceled']}"]
    data: dict[str, Any] = {**counts, "machines": per}
    if errors:
        data["errors"] = errors
    return Result(lines, data, CANCELED if counts["canceled"] else OK)


def _lacks(outcome: Any) -> bool:
    """A group's outcome for a machine that lacks a state named (``StateError``) or is not served (any more)."""
    from machine import StateError

    return isinstance(outcome, (StateError, UnknownState, UnknownMachine)) or (
        isinstance(outcome, BaseException) and getattr(outcome, "code", None) == "unknown_machine")


def _targets(entries: list[Entry], states: tuple[str, ...]) -> list[Entry]:
    """The connected entries that have all ``states`` (a fleet: each link's state asked once, each schema's names
    checked once)."""
    up: dict[Any, bool] = {}
    has: dict[int, bool] = {}  # by the id of a listing's names list (machines of a schema share it)
    out: list[Entry] = []
    for e in entries:
        link = e.link
        ok = up.get(link)
        if ok is None:
            ok = up[link] = link.connected
        if not ok:
            continue
        if link.mirrors and e.id in link.mirrors:  # a mirror: its own state and names
            if e.connected and not e.unknown(states):
                out.append(e)
            continue
        names = e.info.get("states") or []
        known = has.get(id(names))
        if known is None:
            known = has[id(names)] = all(s in names for s in states)
        if known:
            out.append(e)
    return out


_GROUP = {"states": "all-states", "arg_names": "arg", "arg_vals": "val", "json_vals": "val", **FILTER_COMPLETE}


@command("group-add", "Mutations", _GROUP, synopsis="STATE... [filters]",
         short_help="add on every matching machine (prints counts)")
@click.argument("states", nargs=-1, required=True)
@FILTERS
@ARG_VAL
def cmd_group_add(cx: Cx, states: tuple[str, ...], **kw: Any) -> Result:
    """Activate STATES on every connected machine that matches the filters and has all STATES.

    Prints Executed / Queued / Canceled counts (exit 4 when any was canceled)."""
    return _group(cx, "add", states, kw)


@command("group-remove", "Mutations", _GROUP, synopsis="STATE... [filters]",
         short_help="remove on every matching machine (prints counts)")
@click.argument("states", nargs=-1, required=True)
@FILTERS
@ARG_VAL
def cmd_group_remove(cx: Cx, states: tuple[str, ...], **kw: Any) -> Result:
    """Deactivate STATES on every connected machine that matches the filters and has all STATES."""
    return _group(cx, "remove", states, kw)
