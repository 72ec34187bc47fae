"""The panes of ``arpc dbg`` as prompt_toolkit formatted text: machine list, state board, log, detail, status and
help bars. Each pane renders only the lines that fit (a thousand machines cost a screenful, not a thousand lines)
and clickable lines carry their mouse handler."""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from typing import Any

from prompt_toolkit.mouse_events import MouseEvent, MouseEventType

from .model import Model
from .rec import Rec

Fragments = list[tuple[Any, ...]]
OnClick = Callable[[int], None]

HELP = [("↑↓", "move"), ("Tab", "pane"), ("/", "filter"), ("←→", "travel"), ("l", "live"), ("Spc", "pause"),
        ("e", "error"), ("a/r", "add/rm"), ("q", "quit")]

# a relation of a board state to the selected state, both ways, as a short column
ROLES = (("require", "needed"), ("remove", "removed"), ("add", "added"), ("required_by", "needs it"),
         ("removed_by", "removes it"), ("added_by", "adds it"))


def clicker(fn: OnClick, index: int) -> Callable[[MouseEvent], object]:
    """A mouse handler selecting line ``index`` on a click (other mouse events go on to prompt_toolkit)."""
    def handler(ev: MouseEvent) -> object:
        if ev.event_type == MouseEventType.MOUSE_UP:
            fn(index)
            return None
        return NotImplemented

    return handler


def window(total: int, selected: int, height: int, top: int) -> int:
    """The first visible line of a list of ``total`` lines, keeping ``selected`` in view (scrolling from
    ``top``)."""
    if height <= 0 or total <= height:
        return 0
    if selected < top:
        top = selected
    elif selected >= top + height:
        top = selected - height + 1
    return max(0, min(top, total - height))


def hhmmss(t: float) -> str:
    lt = _time.localtime(t)
    return f"{lt.tm_hour:02}:{lt.tm_min:02}:{lt.tm_sec:02}.{int(t * 1000) % 1000:03}"


def fit(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


class Panes:
    """Renders the model; remembers each pane's scroll position and the selected board state."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.focus = "list"          # list | board | log
        self.state_sel: dict[str, str] = {}  # machine id -> selected state on the board
        self._top = {"list": 0, "board": 0, "log": 0}
        self.detail_top = 0

    # -- selection helpers --------------------------------------------------------------------------------------

    def selected_state(self) -> str | None:
        mv = self.model.current
        if mv is None or not mv.names:
            return None
        s = self.state_sel.get(mv.id)
        return s if s in mv.names else mv.names[0]

    def move_state(self, delta: int) -> None:
        mv = self.model.current
        s = self.selected_state()
        if mv is None or s is None:
            return
        i = max(0, min(len(mv.names) - 1, mv.names.index(s) + delta))
        self.state_sel[mv.id] = mv.names[i]
        self.model.version += 1

    def scroll_detail(self, delta: int) -> None:
        self.detail_top = max(0, self.detail_top + 3 * delta)
        self.model.version += 1

    # -- machine list -------------------------------------------------------------------------------------------

    def list_lines(self, width: int, height: int) -> Fragments:
        m = self.model
        rows = m.listing()
        ids = [mv.id for _, mv in rows]
        sel = ids.index(m.selected) if m.selected in ids else 0
        title = f" Machines {len(rows)}/{len(m.machines)}"
        focus = ".focused" if self.focus == "list" else ""
        out: Fragments = [("class:title" + focus, fit(title, width).ljust(width)), ("", "\n")]
        body = height - 1
        top = self._top["list"] = window(len(rows), sel, body, self._top["list"])
        for i in range(top, min(len(rows), top + body)):
            depth, mv = rows[i]
            mark = ("C" if mv.connected else "D") + ("!" if mv.errored else " ")
            text = fit(f"{'>' if i == sel else ' '}{mark} {'  ' * min(depth, 4)}{mv.id}", width)
            style = "class:selected" if i == sel else ("class:error" if mv.errored else
                                                        "class:down" if not mv.connected else "")
            out.append((style, text.ljust(width) if i == sel else text,
                        clicker(self._pick_machine_at(ids), i)))
            out.append(("", "\n"))
        if not rows:
            out.append(("class:dim", fit(" (no machines)" if not m.machines else " (none match)", width)))
        return out

    def _pick_machine_at(self, ids: list[str]) -> OnClick:
        def pick(k: int) -> None:
            self.focus = "list"
            self.model.select(ids[k])

        return pick

    # -- state board --------------------------------------------------------------------------------------------

    def board_lines(self, width: int, height: int) -> Fragments:
        m = self.model
        mv = m.current
        focus = ".focused" if self.focus == "board" else ""
        if mv is None:
            return [("class:title" + focus, " State board".ljust(width))]
        clock = m.board_clock()
        rec = m.shown_record()
        when = "LIVE" if m.cursor is None else f"AT #{m.cursor}" + (f" {hhmmss(rec.time)}" if rec else "")
        # the machine's time: the record's own when travelling (the board's ticks may be derived, see clock_at)
        tick = rec.tick if m.cursor is not None and rec is not None and rec.tick is not None else sum(clock)
        title = f" {mv.id} t{tick} [{when}]" + ("" if mv.connected else " DISCONNECTED")
        out: Fragments = [("class:title" + focus + (".travel" if m.cursor is not None else ""),
                           fit(title, width).ljust(width)), ("", "\n")]
        sel_state = self.selected_state()
        rel = mv.relations_both_ways(sel_state) if sel_state else {}
        names = mv.names
        sel = names.index(sel_state) if sel_state in names else 0
        summary = relation_summary(sel_state, rel) if sel_state else []
        body = max(1, height - 1 - min(len(summary), max(0, height - 1 - len(names))))
        top = self._top["board"] = window(len(names), sel, body, self._top["board"])
        namew = max((len(n) for n in names), default=4)
        for i in range(top, min(len(names), top + body)):
            name = names[i]
            tick = clock[i] if i < len(clock) else 0
            roles = ", ".join(label for key, label in ROLES if name in rel.get(key, ()))
            text = f"{'>' if i == sel else ' '}{'*' if tick & 1 else ' '} {name:<{namew}} {tick:>5} {roles}"
            style = "class:selected" if i == sel else ("class:active" if tick & 1 else "")
            out.append((style, fit(text, width), clicker(self._pick_state_of(mv.id), i)))
            out.append(("", "\n"))
        room = height - 1 - min(body, len(names))
        for line in summary[:max(0, room)]:
            out.append(("class:dim", fit(line, width)))
            out.append(("", "\n"))
        return out

    def _pick_state_of(self, mid: str) -> OnClick:
        def pick(i: int) -> None:
            mv = self.model.machines.get(mid)
            if mv is not None and i < len(mv.names):
                self.focus = "board"
                self.state_sel[mid] = mv.names[i]
                self.model.version += 1

        return pick

    # -- the log and the detail ---------------------------------------------------------------------------------

    def log_lines(self, width: int, height: int) -> Fragments:
        m = self.model
        mv = m.current
        focus = ".focused" if self.focus == "log" else ""
        recs = list(mv.records) if mv is not None else []
        n_title = f" Log {mv.id if mv else ''} ({len(recs)} kept)"
        if m.cursor is not None:
            n_title += "  ←→ travel, l live"
        out: Fragments = [("class:title" + focus, fit(n_title, width).ljust(width)), ("", "\n")]
        if not recs:
            return [*out, ("class:dim", " (no transitions yet)")]
        sel = len(recs) - 1 if m.cursor is None else max(0, min(len(recs) - 1, m.cursor - recs[0].n))
        body = height - 1
        top = self._top["log"] = window(len(recs), sel, body, self._top["log"] if m.cursor is not None
                                        else len(recs))
        for i in range(top, min(len(recs), top + body)):
            r = recs[i]
            chosen = m.cursor is not None and i == sel
            text = fit(f"{'>' if chosen else ' '}{hhmmss(r.time)} {r.summary()}", width)
            style = ("class:selected" if chosen else "class:error" if r.error else
                     "class:canceled" if r.result == "canceled" else "class:dim" if r.note is not None else "")
            out.append((style, text, clicker(self._pick_record_of(recs), i)))
            out.append(("", "\n"))
        return out

    def _pick_record_of(self, recs: list[Rec]) -> OnClick:
        def pick(k: int) -> None:
            self.focus = "log"
            self.model.travel_to(recs[k].n)

        return pick

    def detail_lines(self, width: int, height: int) -> Fragments:
        r = self.model.shown_record()
        title = " Detail" if r is None else detail_head(r)
        out: Fragments = [("class:title", fit(title, width).ljust(width)), ("", "\n")]
        if r is None:
            return out
        lines = detail_text(r)
        body = height - 1
        if self.detail_top == 0 and len(lines) > body:
            lines = squeeze_trace(lines, body)
        top = self.detail_top = max(0, min(self.detail_top, len(lines) - body))
        for style, line in lines[top:top + body]:
            out.append((style, fit(line, width)))
            out.append(("", "\n"))
        return out

    # -- bars ---------------------------------------------------------------------------------------------------

    def status_text(self, width: int, extra: str) -> Fragments:
        m = self.model
        up = sum(1 for mv in m.machines.values() if mv.connected)
        parts = [f"{up}/{len(m.machines)} connected", f"{m.events} events"]
        if m.filter_text:
            parts.append(f"filter {m.filter_text}")
        if m.dropped:
            parts.append(f"dropped {m.dropped}")
        if m.bad:
            parts.append(f"{m.bad} malformed events")
        if m.refused:
            parts.append(f"{m.refused} machines not followed")
        if m.paused:
            parts.append(f"PAUSED ({len(m.pending)} held)")
        if extra:
            parts.append(extra)
        return [("class:status", fit(" " + " │ ".join(parts), width).ljust(width))]


def help_text(width: int) -> Fragments:
    out: Fragments = []
    used = 0
    for key, what in HELP:
        piece = f" {key} {what}"
        if used + len(piece) > width:
            break
        out.extend([("class:help.key", f" {key}"), ("class:help", f" {what}")])
        used += len(piece)
    out.append(("class:help", " " * max(0, width - used)))
    return out


def relation_summary(state: str, rel: dict[str, tuple[str, ...]]) -> list[str]:
    """The selected state's relations both ways, one line each that is not empty."""
    words = (("require", "requires"), ("remove", "removes"), ("add", "adds"), ("after", "after"),
             ("required_by", "required by"), ("removed_by", "removed by"), ("added_by", "added by"))
    return [f" {state} {label}: {' '.join(rel[k])}" for k, label in words if rel.get(k)]


def squeeze_trace(lines: list[tuple[str, str]], height: int) -> list[tuple[str, str]]:
    """``lines`` in ``height`` lines by dropping the oldest frames of the traceback (its end, where the error was
    raised, is what a glance needs); a marker says how many were dropped (J/K scroll the whole)."""
    trace = [i for i, (style, _) in enumerate(lines) if style == "class:trace"]
    # keep at least the last frame (its File line and its code), even if the lines after it go below the pane
    keep = max(min(2, len(trace)), height - (len(lines) - len(trace)) - 1)
    drop = len(trace) - keep
    if not trace or drop <= 0 or len(lines) <= height:
        return lines
    gone = set(trace[:drop])
    out: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        if i == trace[0]:
            out.append(("class:dim", f"  ... {drop} traceback lines above (J/K scroll)"))
        if i not in gone:
            out.append(line)
    return out


def detail_head(r: Rec) -> str:
    """The detail's title: when, what, the result, the tick and how long it took."""
    if r.note is not None:
        return f" #{r.n} {hhmmss(r.time)} note"
    head = f" #{r.n} {hhmmss(r.time)} {r.mutation} {' '.join(r.called)} -> {r.result or '?'}"
    if r.tick is not None:
        head += f" tick {r.tick}"
    if r.duration is not None:
        head += f" took {r.duration * 1000:.2f}ms"
    return head


def detail_text(r: Rec) -> list[tuple[str, str]]:
    """The detail pane's lines, the most telling first: reason, error and traceback, changes, source, args."""
    if r.note is not None:
        return [("", f" {r.note}")]
    lines: list[tuple[str, str]] = []
    if r.reason:
        lines.append(("class:canceled", f" reason: {r.reason}"))
    if r.error:
        e = r.error
        what = f"{e.get('type') or 'error'}: {e.get('message') or ''}"
        where = f" in {e['handler']}" if e.get("handler") else ""
        lines.append(("class:error", f" error: {what}{where}"))
        for tl in str(e.get("trace") or "").rstrip().splitlines():
            # the caret lines under a call and the last line (the error again) tell nothing new
            if tl.strip() and set(tl.strip()) <= set("^~") or tl == what:
                continue
            lines.append(("class:trace", " " + tl))
    changes = f" added: {' '.join(r.added) or '-'}  removed: {' '.join(r.removed) or '-'}"
    lines.append(("", f"{changes}  source: {r.source or ('local' if r.duration is not None else '-')}"
                      + ("  (auto)" if r.auto else "")))
    if r.args:
        lines.append(("", " args: " + " ".join(f"{k}={v}" if k else v for k, v in r.args)))
    return lines
