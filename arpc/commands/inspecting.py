"""Inspecting: ``mach``, ``time``, ``inspect``, ``diagram`` of one machine; ``list``, ``status``, ``watch``
across machines."""

from __future__ import annotations

import queue
import threading
import time as _time
from collections.abc import Callable
from typing import Any

import click

from ..errors import Failed, NoMatch
from ..format import Result, fmt_args, state_string, state_string_all, status_lines, time_string
from ..link import Entry
from .common import FILTER_COMPLETE, FILTERS, MACH, arpc_error, call, filters_of, listing, seconds
from .registry import Cx, command


@command("mach", "Checking", {"mach": "machine"}, synopsis="MACH [--all]",
         short_help="(Foo:1 Bar:3) / with --all (Foo:1) [Bar:0]")
@MACH
@click.option("--all", "show_all", is_flag=True, help="Inactive states too: (Foo:1) [Bar:0 Baz:2].")
def cmd_mach(cx: Cx, mach: str, show_all: bool) -> Result:
    """The active states of MACH with their ticks: (Foo:1 Bar:3)."""
    entry = cx.session.resolve(mach)
    names, time = entry.names, entry.time()
    line = state_string_all(names, time) if show_all else state_string(names, time)
    data = {"machine": entry.id, "active": entry.active(), "clock": dict(zip(names, time, strict=False)),
            "connected": entry.connected}
    err = _last_error(cx, entry)
    if err:
        data["last_error"] = err
    return Result([line, err] if err else [line], data)


def _last_error(cx: Cx, entry: Entry) -> str | None:
    """The last error's line while Exception is active (one round trip, only then)."""
    if not entry.connected or "Exception" not in entry.active():
        return None
    from .history import last_error_line

    return last_error_line(cx.session.mirror(entry))


@command("time", "Checking", {"mach": "machine", "states": "states"}, synopsis="MACH [STATE...] [--sum]",
         short_help="ticks: [0 1 0] / their sum")
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


@command("inspect", "Checking", {"mach": "machine", "states": "states"}, synopsis="MACH [STATE...]",
         short_help="states, ticks, flags and relations")
@MACH
@click.argument("states", nargs=-1)
def cmd_inspect(cx: Cx, mach: str, states: tuple[str, ...]) -> Result:
    """MACH's states (or STATES) with ticks, flags and relations."""
    entry = cx.session.resolve(mach)
    entry.check_states(states)
    m = cx.session.mirror(entry)
    text = call(entry, lambda: m.inspect(*states))
    lines = [f"mach://{entry.id}", "", *text.rstrip("\n").split("\n")]
    schema = m.schema
    clock = dict(zip(m.state_names, m.time(), strict=False))
    info = []
    for name in states or m.state_names:
        st = schema[name]
        info.append({"name": name, "active": bool(clock[name] & 1), "tick": clock[name], "auto": bool(st.auto),
                     "multi": bool(st.multi), "add": list(st.add), "require": list(st.require),
                     "remove": list(st.remove), "after": list(st.after)})
    err = _last_error(cx, entry)
    if err:
        lines.append(err)
    return Result(lines, {"machine": entry.id, "parent_id": entry.parent_id, "tags": entry.tags, "states": info,
                          "last_error": err})


@command("diagram", "Checking", {"mach": "machine", "output": "file"}, synopsis="MACH [-o FILE]",
         short_help="the schema as a Mermaid flowchart")
@MACH
@click.option("-o", "--output", metavar="FILE", help="Write the flowchart to FILE instead.")
def cmd_diagram(cx: Cx, mach: str, output: str | None) -> Result:
    """MACH's schema as a Mermaid flowchart (relations as edges, active states highlighted).

    Printed as is (no `=> ` in the REPL), ready to paste; -o FILE writes it to FILE."""
    from machine import diagram

    entry = cx.session.resolve(mach)
    m = cx.session.mirror(entry)
    text = call(entry, lambda: diagram(m))
    if not text.endswith("\n"):
        text += "\n"
    data = {"machine": entry.id, "mermaid": text}
    if output is not None:
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise Failed(f"cannot write {output}: {e.strerror or e}") from None
        return Result([f"wrote {output}"], {**data, "file": output})
    return Result(text.rstrip("\n").split("\n"), data, raw=True)


def _mach_json(num: int, e: Entry) -> dict[str, Any]:
    names, time = e.names, e.time()
    return {"num": num, "machine": e.id, "parent_id": e.parent_id, "tags": e.tags, "connected": e.connected,
            "address": e.link.address, "time_sum": sum(time),
            "active": [n for n, t in zip(names, time, strict=False) if t & 1],
            "clock": dict(zip(names, time, strict=False))}


@command("list", "Checking", FILTER_COMPLETE, synopsis="[filters] [-Z]",
         short_help="machines: N. id tSUM / C|D[R|S]: states")
@FILTERS
@click.option("-z", "--states", "show_states", type=click.BOOL, default=True, is_flag=False, flag_value=True,
              metavar="BOOL", help="Show active states (--states=false hides them).")
@click.option("-Z", "--states-all", is_flag=True, help="Show inactive states too.")
@click.option("-d", "--disconn", type=click.BOOL, default=True, is_flag=False, flag_value=True, metavar="BOOL",
              help="Include disconnected machines (--disconn=false hides them).")
def cmd_list(cx: Cx, show_states: bool, states_all: bool, disconn: bool, **kw: Any) -> Result:
    """List the machines, sorted by id, with the listing filters.

    Two lines each: `N. <id> t<time sum>` and `<C|D>[R|S]: <active states>` (C connected, D not; R when its
    Ready is active, else S when Start is). With --states=false one line each: `N. <id> t<time sum> <C|D>[R|S]`."""
    entries = listing(cx.session, filters_of(kw, disconn))
    return Result(_list_lines(entries, show_states or states_all, states_all),
                  lambda: [_mach_json(n, e) for n, e in enumerate(entries, 1)])


def _list_lines(entries: list[Entry], show_states: bool, states_all: bool) -> list[str]:
    """The lines of ``list``, two a machine: ``N. <id> t<sum>`` and ``   <C|D>[R|S]: <states>`` (``Entry.flags``
    inlined: a fleet lists 50,000 machines, and this loop is most of the shell's own time there). Machines of one
    schema (their listings share its names list) in the same clock share one formatted row."""
    lines: list[str] = []
    append = lines.append
    link_up: dict[Any, bool] = {}  # asked once a link (a fleet: 50 links, 50,000 machines)
    rows: dict[tuple[int, ...], tuple[int, str, str]] = {}  # (id of names, *ticks) -> (sum, R|S|"", states)
    alive: list[list[str]] = []
    for num, e in enumerate(entries, 1):
        link = e.link
        m = link.mirrors.get(e.id) if link.mirrors else None
        if m is None:
            info = e.info
            names, time = info.get("states") or [], info.get("time") or []
        else:
            names, time = list(m.state_names), list(m.time())
            alive.append(names)  # a new list: kept, so that its id is not reused by another one while rows hold it
        up = link_up.get(link)
        if up is None:
            up = link_up[link] = link.connected
        key = (id(names), *time)  # names stay alive for the whole loop (entries hold a listing's, alive a mirror's)
        row = rows.get(key)
        if row is None:
            row = rows[key] = _row(names, time, show_states, states_all)
        total, mark, string = row
        flags = ("C" if up and (m is None or e.connected) else "D") + mark
        if not show_states:
            append(f"{num}. {e.id} t{total} {flags}")
        else:
            append(f"{num}. {e.id} t{total}")
            append(f"   {flags}: {string}")
    return lines


def _row(names: list[str], time: list[int], show_states: bool, states_all: bool) -> tuple[int, str, str]:
    """A listed machine's time sum, its ``R``/``S`` mark (as ``Entry.flags``) and its states string."""
    mark = ""
    for state, letter in (("Ready", "R"), ("Start", "S")):
        i = names.index(state) if state in names else len(time)
        if i < len(time) and time[i] & 1:
            mark = letter
            break
    string = "" if not show_states else state_string_all(names, time) if states_all else state_string(names, time)
    return sum(time), mark, string


@command("status", "Checking", synopsis="[-a]", short_help="connected / connecting / disconnected")
@click.option("-a", "--addresses", "every", is_flag=True, help="List every address, connected or not.")
def cmd_status(cx: Cx, every: bool = False) -> Result:
    """Counts of connected, connecting and disconnected machines; then each address that is not connected (every
    address with -a), with its client's connection states and last error, as `connect` lists them."""
    cx.session.ensure_open()
    st = cx.session.status()
    links = [link for link in cx.session.links() if every or not link.connected]
    data: dict[str, Any] = {"connected": st.connected, "connecting": st.connecting,
                            "disconnected": st.disconnected, "total": st.total}
    if links:
        data["addresses"] = [link.summary() for link in links]
    return Result(status_lines(st.connected, st.connecting, st.disconnected, st.total) + [ln.line() for ln in links],
                  data)


@command("watch", "Checking", {"mach": "machine", **FILTER_COMPLETE}, synopsis="[MACH] [filters] [-n N]",
         short_help="stream transitions until Ctrl+C")
@click.argument("mach", required=False, metavar="[MACH]")
@FILTERS
@click.option("-n", "--count", type=click.IntRange(min=1), metavar="N", help="Stop after N transitions.")
@click.option("--duration", metavar="DUR", help="Stop after DUR (500ms, 5s, 1m).")
def cmd_watch(cx: Cx, mach: str | None, count: int | None, duration: str | None, **kw: Any) -> Result:
    """Print every transition of MACH (or of every machine matching the filters) until Ctrl+C.

    Each line: time, machine, +added -removed *re-entered states, (args), time sum."""
    limit = seconds(duration)
    flt = filters_of(kw)
    # a fleet's -d DIR with id filters alone: subscribed at once, no listing first (each daemon's state names
    # are asked when its first record comes)
    unlisted = mach is None and not cx.repl and flt.by_id_only() and cx.session.unlisted()
    by_link: dict[Any, list[Entry]] = {}
    lazy: dict[Any, list[str]] = {}  # unlisted: the ids of each link
    if mach is not None:
        one = cx.session.resolve(mach)
        by_link[one.link] = [one]
    elif unlisted:
        cx.session.ensure_open()
        for link in cx.session.links():
            ids = flt.ids([i["id"] for i in link.infos]) if link.connected else []
            if ids:
                lazy[link] = ids
    else:
        for e in listing(cx.session, flt):
            if e.connected:
                by_link.setdefault(e.link, []).append(e)
    if not by_link and not lazy:
        raise NoMatch()
    q: _Queue = queue.SimpleQueue()
    unsubs: list[Callable[[], None]] = []
    stop = threading.Event()
    failed: list[BaseException] = []

    def subscribe(group: list[Entry] | tuple[Any, list[str]]) -> None:
        if isinstance(group, tuple):  # unlisted: one subscription, else (an older daemon) mirrors as below
            link, ids = group
            if stop.is_set() or _watch_link_lazily(link, ids, q, unsubs, failed):
                return
            group = [Entry(link, {"id": mid}) for mid in ids]
        elif mach is None and not stop.is_set() and _watch_link(group, q, unsubs, failed):
            return  # one subscription for the link's machines
        for e in group:
            if stop.is_set() or failed:
                return
            try:
                unsubs.append(call(e, lambda: _watch_one(cx, e, q)))  # noqa: B023 - called at once
            except BaseException as err:  # noqa: BLE001 - raised by the command's thread
                failed.append(err)

    pool = None
    futures: list[Any] = []
    groups: list[list[Entry] | tuple[Any, list[str]]] = [*by_link.values(), *lazy.items()]
    try:
        if len(groups) == 1:
            subscribe(groups[0])
        else:  # a fleet: every daemon's machines subscribed at once, transitions shown as soon as they come
            from concurrent.futures import ThreadPoolExecutor

            # one thread a link (a link: one request, or one mirror a machine for older daemons)
            pool = ThreadPoolExecutor(min(64, len(groups)), thread_name_prefix="arpc-watch")
            futures = [pool.submit(subscribe, group) for group in groups]
        if failed:
            raise failed[0]
        seen = 0
        deadline = None if limit is None else _time.monotonic() + limit
        while count is None or seen < count:
            if failed:
                raise failed[0]
            step = 0.25 if deadline is None else min(0.25, deadline - _time.monotonic())
            if step <= 0:
                break
            try:
                mid, at, u = q.get(timeout=step)
            except queue.Empty:
                continue
            if mid is None:  # the server dropped records for us (we did not read fast enough)
                cx.printer.warn(f"{u['dropped']} transitions at {u['address']} not shown: the shell fell behind")
                continue
            seen += 1
            cx.emit(_watch_result(mid, at, u))
    finally:
        stop.set()
        if pool is None:
            for unsub in unsubs:
                _quietly(unsub)
        else:
            from concurrent.futures import wait

            for f in futures:
                f.cancel()
            wait(futures)  # each thread stops after its subscription in flight
            list(pool.map(_quietly, list(unsubs)))  # a fleet's unwatch round trips at once, on the same threads
            pool.shutdown(wait=True)
    return Result([], None)


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - stopping a watch that is gone already
        pass


_Queue = queue.SimpleQueue[tuple[Any, float, dict[str, Any]]]  # (id, time, update); a None id: records dropped


def _watch_link(group: list[Entry], q: _Queue, unsubs: list[Callable[[], None]], failed: list[BaseException]
                ) -> bool:
    """Watch ``group`` (the machines of one link) with one subscription; False when the link cannot (in-process
    machines, an older daemon)."""
    from ..watch import subscribe_link

    link = group[0].link
    names = {e.id: e.names for e in group}
    every = len(names) == len(link.infos)
    return _subscribed(group[0], q, unsubs, failed,
                       lambda put, dropped: subscribe_link(link.conn, names, every, put, dropped))


def _watch_link_lazily(link: Any, ids: list[str], q: _Queue, unsubs: list[Callable[[], None]],
                       failed: list[BaseException]) -> bool:
    """:func:`_watch_link` for machines known by id alone (``Session.unlisted``)."""
    from ..watch import subscribe_link_lazily

    first = Entry(link, {"id": ids[0]})
    every = len(ids) == len(link.infos)
    return _subscribed(first, q, unsubs, failed, lambda put, dropped: subscribe_link_lazily(
        link.conn, set(ids), every, put, dropped, lambda e: failed.append(arpc_error(first, e) or e)))


def _subscribed(first: Entry, q: _Queue, unsubs: list[Callable[[], None]], failed: list[BaseException],
                subscribe: Callable[[Any, Any], Callable[[], None] | None]) -> bool:
    """Run ``subscribe(put, dropped)`` for ``first``'s link (its updates and drop notices into ``q``): True when
    subscribed (its unsubscribe kept) or failed (the error kept), False when the link cannot watch."""
    address = first.link.address

    def put(mid: str, at: float, u: dict[str, Any]) -> None:
        q.put((mid, at, u))

    def dropped(n: int) -> None:
        q.put((None, 0.0, {"dropped": n, "address": address}))

    try:
        unsub = call(first, lambda: subscribe(put, dropped))
    except BaseException as err:  # noqa: BLE001 - raised by the command's thread
        failed.append(err)
        return True
    if unsub is None:
        return False
    unsubs.append(unsub)
    return True


def _watch_one(cx: Cx, e: Entry, q: _Queue) -> Callable[[], None]:
    from ..watch import subscribe

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


