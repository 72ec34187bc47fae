"""What ``arpc dbg`` knows: one :class:`MachineView` per followed machine (its clock, schema, bounded transition
log) and the :class:`Model` over them (filter, selection, pause, time travel). Plain data, no I/O, no UI.

Everything reaches the model as an *event*, a JSON-safe dict with a kind ``k`` (see :data:`KINDS`), whether it
comes from live connections or from a ``--replay`` file: the two sources cannot drift apart.
"""

from __future__ import annotations

import shlex
import time as _time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

from ..errors import UsageError
from ..filters import Filters
from .rec import Rec, Rows, make_rec

Event = dict[str, Any]

#: ``machine``: a machine listed (or listed again after a reconnect) with its names, schema and clock;
#: ``update``: one transition seen by ``on_update``; ``history``: one record of the source's history;
#: ``status``: link up or down; ``note``: a line for the machine's log (e.g. no history kept); ``gap``: events
#: dropped before reaching the screen.
KINDS = ("machine", "update", "history", "status", "note", "gap")

MAX_RECORDS = 200       # per machine: the log pane and time travel reach this far back
MAX_MACHINES = 5000     # machines followed; more are counted, not shown
MAX_PENDING = 50_000    # events held while paused


def relations_of(schema: Mapping[str, Any]) -> dict[str, dict[str, tuple[str, ...]]]:
    """The relations of a wire or JSON schema (``{state: {require: [...], ...}}`` or ``State`` objects)."""
    out: dict[str, dict[str, tuple[str, ...]]] = {}
    for name, st in schema.items():
        rel: dict[str, tuple[str, ...]] = {}
        for kind in ("require", "remove", "add", "after"):
            v = st.get(kind) if isinstance(st, Mapping) else getattr(st, kind, ())
            rel[kind] = tuple(v or ())
        out[str(name)] = rel
    return out


class MachineView:
    """One followed machine: what the list and the board show, and its bounded log."""

    def __init__(self, mach_id: str, max_records: int = MAX_RECORDS) -> None:
        self.id = mach_id
        self.parent_id: str | None = None
        self.tags: tuple[str, ...] = ()
        self.names: list[str] = []
        self.relations: dict[str, dict[str, tuple[str, ...]]] = {}
        self.clock_now: tuple[int, ...] = ()
        self.connected = True
        self.records = Rows(max_records)
        self.next_n = 1
        self.last_error_n = 0   # the n of the newest record with an error (0: none seen)
        self._last_error: tuple[Any, ...] = ()
        self.changes = 0        # transitions seen (the list's activity figure)
        self.from_history = False  # the log is the source's history (else: one record per update)
        # clocks seen in updates by their sum, which is a history record's ``tick``: gives records their clock
        self.by_sum: dict[int, tuple[int, ...]] = {}
        self._max_sums = 128  # a record waits for its update a few pushes at most; older ones are derived

    # -- what the list filters read (the same names as arpc.link.Entry) ----------------------------------------

    def clock(self) -> dict[str, int]:
        return dict(zip(self.names, self.clock_now, strict=False))

    def active(self, clock: Iterable[int] | None = None) -> list[str]:
        c = self.clock_now if clock is None else clock
        return [n for n, t in zip(self.names, c, strict=False) if t & 1]

    @property
    def errored(self) -> bool:
        return bool(self.clock().get("Exception", 0) & 1)

    # -- relations ----------------------------------------------------------------------------------------------

    def relations_both_ways(self, state: str) -> dict[str, tuple[str, ...]]:
        """What ``state`` requires / removes / adds / is after, and which states require / remove / add it."""
        own = self.relations.get(state, {})
        out = {k: own.get(k, ()) for k in ("require", "remove", "add", "after")}
        for kind, back in (("require", "required_by"), ("remove", "removed_by"), ("add", "added_by")):
            out[back] = tuple(n for n, rel in self.relations.items() if state in rel.get(kind, ()))
        return out

    # -- the log ------------------------------------------------------------------------------------------------

    def append(self, rec: Rec) -> None:
        self.records.append(rec)
        self.next_n = rec.n + 1
        if rec.err is not None:
            # a raising handler cancels its transition, then Exception is added with the same error: the jump
            # goes to the first of the two, which names the handler
            key = rec.err[:3] if rec.err is not None else ()
            if key != self._last_error or self.index_of(self.last_error_n) is None:
                self.last_error_n = rec.n
                self._last_error = key

    def switch_to_history(self, first_tick: Any) -> None:
        """The source's history starts (again) at a record of ``first_tick``: drop the records made from updates
        that it covers (the transitions at or after that tick), so none is logged twice."""
        self.from_history = True
        if not isinstance(first_tick, int):
            return
        recs = self.records
        while recs and (recs[-1].note is not None or (recs[-1].tick is not None and recs[-1].tick >= first_tick)):
            recs.pop()
        if recs:
            self.next_n = recs[-1].n + 1
            if self.last_error_n >= self.next_n:
                self.last_error_n = 0
                for r in reversed(recs):
                    if r.err is not None:
                        self.last_error_n = r.n
                        break

    def index_of(self, n: int) -> int | None:
        """The index in ``records`` of record number ``n`` (None: not kept, or never made)."""
        if not self.records:
            return None
        i = n - self.records[0].n
        return i if 0 <= i < len(self.records) else None

    def clock_at(self, n: int | None) -> tuple[int, ...]:
        """The clock after record ``n`` (now when ``n`` is None or not kept).

        A record from an update has its clock; one from the history gets the update's clock of the same sum,
        else it is derived from the nearest record that has one, undoing (or applying) the states added and
        removed in between. Derived clocks have exact active flags; a tick may be off where the history does not
        list a change (e.g. a multi state re-entered)."""
        i = None if n is None else self.index_of(n)
        if i is None:
            return self.clock_now
        c = self._known(i)
        if c is not None:
            return c
        recs = self.records
        for j in range(i + 1, len(recs)):
            cj = self._known(j)
            if cj is not None:
                return self._undo(cj, j, i)
        last_tick = recs[-1].tick
        if last_tick is None or sum(self.clock_now) >= last_tick:
            return self._undo(self.clock_now, len(recs) - 1, i)
        for j in range(i - 1, -1, -1):
            cj = self._known(j)
            if cj is not None:
                return self._redo(cj, j, i)
        return self.clock_now

    def _known(self, i: int) -> tuple[int, ...] | None:
        r = self.records[i]
        if r.clock is None and r.tick is not None and r.note is None:
            c = self.by_sum.get(r.tick)
            if c is not None:
                self.records.set_clock(i, c)
            return c
        return r.clock

    def _undo(self, clock: tuple[int, ...], j: int, i: int) -> tuple[int, ...]:
        """The clock after record ``i``, from ``clock`` (after record ``j``), undoing records j .. i+1."""
        c = list(clock)
        pos = {name: k for k, name in enumerate(self.names)}
        for k in range(j, i, -1):
            r = self.records[k]
            for name in (*r.added, *r.removed):
                if name in pos and c[pos[name]] > 0:
                    c[pos[name]] -= 1
        return tuple(c)

    def _redo(self, clock: tuple[int, ...], j: int, i: int) -> tuple[int, ...]:
        """The clock after record ``i``, from ``clock`` (after record ``j``), applying records j+1 .. i."""
        c = list(clock)
        pos = {name: k for k, name in enumerate(self.names)}
        for k in range(j + 1, i + 1):
            r = self.records[k]
            for name in (*r.added, *r.removed):
                if name in pos:
                    c[pos[name]] += 1
        return tuple(c)

    def saw_clock(self, clock: tuple[int, ...]) -> None:
        """Remember ``clock`` by its sum (bounded): the history records of that tick get it."""
        self.clock_now = clock
        self.by_sum[sum(clock)] = clock
        if len(self.by_sum) > self._max_sums:
            for k in list(self.by_sum)[: len(self.by_sum) // 2]:
                del self.by_sum[k]


class Model:
    """Every followed machine, the list filter, the selection, pause and the time-travel cursor."""

    def __init__(self, *, max_records: int = MAX_RECORDS, max_machines: int = MAX_MACHINES,
                 max_pending: int = MAX_PENDING) -> None:
        self.max_records = max_records
        self.max_machines = max_machines
        self.machines: dict[str, MachineView] = {}
        self._refused: set[str] = set()  # machines not followed (over max_machines)
        self.dropped = 0            # events lost before the model (UI queue full) or while paused
        self.events = 0             # events applied
        self.bad = 0                # malformed events skipped
        self.filter_text = ""
        self._filter: tuple[Filters, tuple[str, ...], tuple[str, ...]] = (Filters(), (), ())
        self.selected: str | None = None
        # the record selected in the log: the board shows the clock after it (time travel); None: live, newest
        self.cursor: int | None = None
        self.paused = False
        self.pending: deque[Event] = deque(maxlen=max_pending)
        self.version = 0            # bumped on every change the screen shows (redraw coalescing reads it)
        self._order: list[tuple[int, MachineView]] | None = None

    # -- events -------------------------------------------------------------------------------------------------

    def feed(self, ev: Event) -> None:
        """Apply ``ev``, or hold it while paused (the oldest held events are dropped past ``max_pending``)."""
        if self.paused:
            if len(self.pending) == self.pending.maxlen:
                self.dropped += 1
            self.pending.append(ev)
            return
        self.apply(ev)

    def apply(self, ev: Event) -> None:
        kind = ev.get("k")
        mid = ev.get("m")
        if kind == "gap":
            self.dropped += int(ev.get("n") or 0)
            self.version += 1
            return
        if not isinstance(mid, str):
            return
        mv = self.machines.get(mid)
        if mv is None:
            if kind != "machine":
                return
            if len(self.machines) >= self.max_machines:
                if len(self._refused) < self.max_machines:  # ids only, to count each machine once
                    self._refused.add(mid)
                return
            mv = self.machines[mid] = MachineView(mid, self.max_records)
            self._order = None
            if self.selected is None:
                self.selected = mid
        self.events += 1
        self.version += 1
        when = float(ev.get("t") or _time.time())
        if kind == "machine":
            self._on_machine(mv, ev)
        elif kind == "update":
            self._on_update(mv, ev, when)
        elif kind == "history":
            rec = ev.get("rec") or {}
            if not mv.from_history:
                mv.switch_to_history(rec.get("tick"))
                if mv.id == self.selected:
                    self.cursor = None
            mv.append(make_rec(mv.next_n, float(rec.get("time") or when), fields=rec))
        elif kind == "status":
            mv.connected = bool(ev.get("up"))
            self._order = None
        elif kind == "note":
            if ev.get("hist") is False:  # the history is no longer followed: updates make the records again
                mv.from_history = False
            mv.append(make_rec(mv.next_n, when, note=str(ev.get("text") or "")))

    def _on_machine(self, mv: MachineView, ev: Event) -> None:
        parent = ev.get("parent")
        tags = tuple(ev.get("tags") or ())
        if parent != mv.parent_id or tags != mv.tags:
            self._order = None
        mv.parent_id = parent if isinstance(parent, str) else None
        mv.tags = tags
        mv.names = [str(n) for n in ev.get("states") or ()]
        schema = ev.get("schema")
        if isinstance(schema, Mapping):
            mv.relations = relations_of(schema)
        mv.by_sum.clear()  # (listed again) the source may be a new process, whose sums start again
        mv.saw_clock(tuple(int(t) for t in ev.get("clock") or ()))
        mv.connected = bool(ev.get("up", True))

    def _on_update(self, mv: MachineView, ev: Event, when: float) -> None:
        clock = tuple(int(t) for t in ev.get("clock") or ())
        mv.changes += 1
        mv.saw_clock(clock)
        if ev.get("h"):  # the history brings this transition's record
            return
        muts = ev.get("mutations") or []
        m0: Mapping[str, Any] = muts[-1] if muts and isinstance(muts[-1], Mapping) else {}
        fields: dict[str, Any] = {"mutation": m0.get("type"), "called": m0.get("called"), "args": m0.get("args"),
                                  "auto": m0.get("auto"), "result": "executed", "added": ev.get("added"),
                                  "removed": ev.get("removed"), "tick": sum(clock)}
        if "Exception" in (ev.get("added") or ()):
            fields["error"] = error_from_args(m0.get("args"))
        mv.append(make_rec(mv.next_n, when, clock=clock, fields=fields))

    @property
    def refused(self) -> int:
        """Machines listed but not followed (past ``max_machines``)."""
        return len(self._refused)

    def pause(self) -> None:
        self.paused = True
        self.version += 1

    def resume(self) -> None:
        """Apply what was held while paused, in order."""
        self.paused = False
        while self.pending:
            self.apply(self.pending.popleft())
        self.version += 1

    # -- the machine list ---------------------------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Filter the list: ``list``'s filters (``-a/-i STATE``, ``-P PARENT``, ``-r RE``, ``-I/-p/-s TEXT``),
        ``--tag TAG`` (repeatable), or bare words (the id contains each). A bad filter is a :class:`UsageError`."""
        self._filter = parse_filter(text)
        self.filter_text = text.strip()
        self.version += 1
        shown = [mv.id for _, mv in self.listing()]
        if shown and self.selected not in shown:
            self.select(shown[0])

    def listing(self) -> list[tuple[int, MachineView]]:
        """The list pane: (depth, machine), children under their parent, filtered."""
        order = self._order
        if order is None:
            order = self._order = tree(self.machines)
        filt, tags, words = self._filter
        if not self.filter_text:
            return order
        views = [mv for _, mv in order if all(t in mv.tags for t in tags) and all(w in mv.id for w in words)]
        # the list command's own filters, over the views (they read the same id/parent_id/connected/clock())
        kept = {id(mv) for mv in filt.apply(cast(Any, views))}
        return [(d, mv) for d, mv in order if id(mv) in kept]

    def select(self, mach_id: str | None) -> None:
        if mach_id != self.selected:
            self.selected = mach_id
            self.cursor = None
            self.version += 1

    def move(self, delta: int) -> None:
        """Select the machine ``delta`` lines away in the list."""
        ids = [mv.id for _, mv in self.listing()]
        if not ids:
            return
        i = ids.index(self.selected) if self.selected in ids else 0
        self.select(ids[max(0, min(len(ids) - 1, i + delta))])

    @property
    def current(self) -> MachineView | None:
        return self.machines.get(self.selected) if self.selected is not None else None

    # -- time travel and the log selection ----------------------------------------------------------------------

    def travel(self, delta: int) -> None:
        """Step the cursor ``delta`` records (negative: back in time); past the newest record means live again."""
        mv = self.current
        if mv is None or not mv.records:
            return
        first, last = mv.records[0].n, mv.records[-1].n
        n = (last + 1 if self.cursor is None else max(self.cursor, first)) + delta
        self.cursor = None if n > last else max(first, n)
        self.version += 1

    def live(self) -> None:
        """Back to now: the board follows the machine, the log its newest record."""
        self.travel_to(None)

    def travel_to(self, n: int | None) -> None:
        """Select record number ``n`` (None: live)."""
        self.cursor = n
        self.version += 1

    def jump_to_error(self) -> bool:
        """Select the newest record with an error: the selected machine's, else the newest of any machine."""
        mv = self.current
        if mv is None or not mv.last_error_n or mv.index_of(mv.last_error_n) is None:
            best: tuple[float, MachineView] | None = None
            for other in self.machines.values():
                i = other.index_of(other.last_error_n) if other.last_error_n else None
                if i is not None and (best is None or other.records[i].time > best[0]):
                    best = (other.records[i].time, other)
            if best is None:
                return False
            self.select(best[1].id)
            mv = best[1]
        self.cursor = mv.last_error_n
        self.version += 1
        return True

    def shown_record(self) -> Rec | None:
        """The record of the detail pane: the selected one, else (live) the newest."""
        mv = self.current
        if mv is None or not mv.records:
            return None
        if self.cursor is not None:
            i = mv.index_of(self.cursor)
            if i is not None:
                return mv.records[i]
        return mv.records[-1]

    def board_clock(self) -> tuple[int, ...]:
        """The clock the board shows: as it was after the cursor's record, or now."""
        mv = self.current
        return () if mv is None else mv.clock_at(self.cursor)


def error_from_args(args: Any) -> dict[str, Any] | None:
    """The error carried by Exception's args (``err``, maybe ``err_trace``) as a history error record."""
    if not isinstance(args, Mapping):
        return None
    err = args.get("err")
    if err is None:
        return None
    text = str(err)
    typ, _, msg = text.partition(": ") if ": " in text else ("", "", text)
    if typ.startswith("<") or " " in typ:  # a repr, not "Type: message"
        typ, msg = "", text
    trace = args.get("err_trace") or args.get("trace") or ""
    return {"type": typ or "error", "message": msg, "trace": str(trace), "handler": args.get("handler")}


def tree(machines: Mapping[str, MachineView]) -> list[tuple[int, MachineView]]:
    """Machines as a tree, sorted by id: children right under their parent (a parent not followed: a root)."""
    kids: dict[str | None, list[MachineView]] = {}
    for mv in machines.values():
        p = mv.parent_id if mv.parent_id in machines and mv.parent_id != mv.id else None
        kids.setdefault(p, []).append(mv)
    out: list[tuple[int, MachineView]] = []
    seen: set[str] = set()

    def walk(parent: str | None, depth: int) -> Iterator[tuple[int, MachineView]]:
        stack = [(depth, mv) for mv in sorted(kids.get(parent, ()), key=lambda m: m.id, reverse=True)]
        while stack:
            d, mv = stack.pop()
            if mv.id in seen:
                continue
            seen.add(mv.id)
            yield d, mv
            stack.extend((d + 1, c) for c in sorted(kids.get(mv.id, ()), key=lambda m: m.id, reverse=True))

    out.extend(walk(None, 0))
    # a parent cycle has no root: list those machines flat
    out.extend((0, mv) for mv in sorted(machines.values(), key=lambda m: m.id) if mv.id not in seen)
    return out


_FLAGS = {"-a": "active", "--active": "active", "-i": "inactive", "--inactive": "inactive",
          "-P": "parent", "--parent": "parent", "-r": "id_regexp", "--id-regexp": "id_regexp",
          "-I": "id_partial", "--id-partial": "id_partial", "-p": "id_prefix", "--id-prefix": "id_prefix",
          "-s": "id_suffix", "--id-suffix": "id_suffix", "--tag": "tag", "-g": "tag"}


def parse_filter(text: str) -> tuple[Filters, tuple[str, ...], tuple[str, ...]]:
    """A filter line as :class:`arpc.filters.Filters`, the wanted tags and the bare words (the id contains
    each)."""
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise UsageError(f"filter: {e}") from None
    kw: dict[str, Any] = {"active": [], "inactive": [], "tag": []}
    bare: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        key = _FLAGS.get(w)
        if key is None:
            if w.startswith("-") and len(w) > 1:
                raise UsageError(f"filter: unknown option {w}")
            bare.append(w)
            i += 1
            continue
        if i + 1 >= len(words):
            raise UsageError(f"filter: {w} needs a value")
        if isinstance(kw.get(key), list):
            kw[key].append(words[i + 1])
        else:
            kw[key] = words[i + 1]
        i += 2
    tags = tuple(kw.pop("tag"))
    f = Filters(active=tuple(kw.pop("active")), inactive=tuple(kw.pop("inactive")), **kw)
    f.apply([])  # compiles the regexp: a bad one is a UsageError now, not at the next redraw
    return f, tags, tuple(bare)
