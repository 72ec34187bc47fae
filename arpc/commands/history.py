"""Looking back: ``log`` (a machine's transitions, with why they were canceled; ``--follow`` goes on live),
``errors`` (its last errors with tracebacks) and ``info`` (the daemon's or a machine's figures)."""

from __future__ import annotations

import queue
import re
import time as _time
from typing import Any

import click

from ..errors import Failed, UsageError
from ..format import Result, fmt_args
from ..link import Entry
from .common import MACH, call
from .registry import Cx, command

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def since_seconds(text: str) -> float:
    """``10m`` -> 600.0; a clear usage error otherwise."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise UsageError(f"invalid --since {text!r}: a duration like 500ms, 30s, 10m, 2h or 1d")
    return float(m.group(1)) * _UNIT[m.group(2)]


def stamp(at: float) -> str:
    return _time.strftime("%H:%M:%S", _time.localtime(at)) + f".{int(at * 1000) % 1000:03d}"


def record_line(mach_id: str, r: dict[str, Any]) -> str:
    """``12:00:01.250 worker0 add Foo executed +Foo -Bar (k=v) t12 1.2ms [session rc-1]`` or
    ``... add Baz canceled: BazEnter returned False ...``."""
    parts = [stamp(r["time"]), mach_id, r["mutation"] + (":auto" if r.get("auto") else ""), " ".join(r["called"])]
    parts.append(r["result"] + (f": {r['reason']}" if r.get("reason") else ""))
    parts += [f"+{s}" for s in r.get("added") or ()]
    parts += [f"-{s}" for s in r.get("removed") or ()]
    args = {k: v for k, v in (r.get("args") or {}).items() if k != "err_trace"}
    if args:
        parts.append(fmt_args(args))
    parts.append(f"t{r['tick']}")
    parts.append(f"{r.get('duration', 0) * 1000:.1f}ms")
    if r.get("source"):
        parts.append(f"[{r['source']}]")
    return " ".join(parts)


def _history_call(entry: Entry, fn: Any) -> Any:
    def guarded() -> Any:
        try:
            return fn()
        except Exception as e:
            if getattr(e, "code", None) == "no_history":
                raise Failed(f"machine {entry.id} keeps no history (the daemon exposes it with history=0)") from None
            raise

    return call(entry, guarded)


def _local_history(m: Any, entry: Entry) -> Any:
    h = m.history
    if h is None:
        raise Failed(f"machine {entry.id} keeps no history (call keep_history(N) on it)")
    return h


@command("log", "Checking", {"mach": "machine"}, synopsis="MACH [-n N] [--since DUR|--since-tick T] [--follow]",
         short_help="transitions with reasons: time op states result +added -removed")
@MACH
@click.option("-n", "--lines", "count", type=click.IntRange(min=0), default=20, show_default=True, metavar="N",
              help="The last N records.")
@click.option("--since", "since", metavar="DUR", help="Only records of the last DUR (30s, 10m, 2h).")
@click.option("--since-tick", "since_tick", type=int, metavar="T", help="Only records after machine time T.")
@click.option("-f", "--follow", is_flag=True, help="Then print new records as they happen, until Ctrl+C.")
def cmd_log(cx: Cx, mach: str, count: int, since: str | None, since_tick: int | None, follow: bool) -> Result:
    """MACH's transition history, oldest first: what was called, the result and, when canceled, why (the handler
    that returned False or raised, the relation that blocked); states added and removed, args, machine time,
    duration and who sent it. --follow goes on with live transitions, with no gap or repeat in between."""
    since_time = _time.time() - since_seconds(since) if since is not None else None
    entry = cx.session.resolve(mach)
    m = cx.session.mirror(entry)
    remote = hasattr(m, "on_history")
    if not follow:
        if remote:
            recs = _history_call(entry, lambda: m.history.records(since_tick=since_tick, since_time=since_time,
                                                                  limit=count))
        else:
            recs = _local_history(m, entry).records(since_tick=since_tick, since_time=since_time, limit=count)
        return Result([record_line(entry.id, r) for r in recs], {"machine": entry.id, "records": recs})
    q: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
    if remote:
        stop = _history_call(entry, lambda: m.on_history(q.put, backlog=count))
    else:
        backlog, stop = _local_history(m, entry).follow(q.put, limit=count)
        for r in backlog:
            q.put(r)
    try:
        while True:
            try:
                r = q.get(timeout=0.25)
            except queue.Empty:
                continue
            if (since_tick is not None and r["tick"] <= since_tick) or (
                    since_time is not None and r["time"] < since_time):
                continue
            cx.emit(Result([record_line(entry.id, r)], {"machine": entry.id, **r}))
    finally:
        stop()


@command("errors", "Checking", {"mach": "machine"}, synopsis="MACH [-n N]",
         short_help="the last errors with their tracebacks")
@MACH
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=5, show_default=True, metavar="N",
              help="The last N errors.")
def cmd_errors(cx: Cx, mach: str, count: int) -> Result:
    """MACH's last errors, oldest first, with the handler that raised and the traceback (kept after Exception
    is removed)."""
    entry = cx.session.resolve(mach)
    m = cx.session.mirror(entry)
    errs = (_history_call(entry, lambda: m.errors(count)) if hasattr(m, "on_history")
            else _local_history(m, entry).errors(count))
    lines: list[str] = []
    for e in errs:
        by = f" in {e['handler']}" if e.get("handler") else ""
        lines.append(f"{stamp(e['time'])} {e['type']}: {e['message']}{by}")
        lines += [f"  {ln}" for ln in (e.get("trace") or "").rstrip("\n").split("\n") if ln]
    if not errs:
        lines.append("no errors")
    return Result(lines, {"machine": entry.id, "errors": errs})


@command("info", "Checking", {"mach": "machine"}, synopsis="[MACH]",
         short_help="the daemons' figures, or one machine's")
@click.argument("mach", required=False, metavar="[MACH]")
def cmd_info(cx: Cx, mach: str | None) -> Result:
    """Without MACH: each connected daemon's figures (machines, sessions, queued mutations, machines in
    Exception, uptime, requests). With MACH: its queue, machine time, history kept and last error."""
    if mach is not None:
        entry = cx.session.resolve(mach)
        m = cx.session.mirror(entry)
        if not hasattr(m, "info"):
            raise Failed(f"machine {entry.id} is local: info is for served machines")
        i = call(entry, m.info)
        err = i.get("last_error")
        lines = [f"{entry.id}: t{i['time_sum']} queue {i['queue_len']} (tick {i['queue_tick']}), "
                 f"history {i['records']} records (keeps {i['history']})",
                 f"active: {' '.join(i['active']) or '-'}"]
        if err:
            lines.append(f"last error: {err['type']}: {err['message']}" + (f" in {err['handler']}"
                                                                            if err.get("handler") else ""))
        return Result(lines, {"machine": entry.id, **i})
    cx.session.ensure_open()
    lines, data = [], []
    for link in cx.session.links():
        conn = link.conn
        if conn is None or not hasattr(conn, "info"):
            lines.append(link.line())
            continue
        try:
            i = conn.info()
        except Exception as e:  # one daemon failing does not hide the others
            cs = link.conn_states()
            lines.append(f"{link.address}: {e}" + (f" [{cs}]" if cs else ""))
            continue
        data.append(i)
        lines.append(f"{link.address}: {i['machines']} machines, {i['sessions']} sessions, {i['queued']} queued, "
                     f"{len(i['exceptions'])} in Exception, up {i['uptime']:.0f}s, {i['handled']} requests "
                     f"({i['errors']} errors)")
        if i["exceptions"]:
            lines.append("  in Exception: " + " ".join(i["exceptions"][:20]))
    return Result(lines, data)


def cancel_reason(m: Any, states: tuple[str, ...]) -> str | None:
    """Why the last canceled mutation of ``states`` on ``m`` was canceled, from the machine's history (None when
    it keeps none or it can't be told)."""
    try:
        h = m.history
        if h is None:
            return None
        for r in reversed(h.records(limit=10)):
            if r["result"] == "canceled" and r["called"] == list(states):
                return str(r["reason"]) if r.get("reason") else None
    except Exception:  # the reason is a courtesy: never fail the command for it
        return None
    return None


def last_error_line(m: Any) -> str | None:
    """``Exception: RuntimeError: disk full (in CState)`` when Exception is active and the history has it."""
    try:
        if not m.is_active("Exception"):
            return None
        errs = m.errors(1) if hasattr(m, "on_history") else (m.history.errors(1) if m.history else [])
    except Exception:
        return None
    if not errs:
        return None
    e = errs[-1]
    return f"Exception: {e['type']}: {e['message']}" + (f" (in {e['handler']})" if e.get("handler") else "")
