"""The registry of pending waiters (``Subscriptions``), and the functions that register a waiter and resolve the
due ones after a change of the clock, the queue or an entered state's args (spec section 12)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .ctx_waiter import Ctx, Waiter, resolved_waiter
from .log import LogLevel, safe_repr
from .mutation import Result

if TYPE_CHECKING:
    from .machine import Machine

Clock = dict[str, int]


class Subscriptions:
    """Pending waiters by kind. All methods are called with ``lock`` held unless said otherwise."""

    def __init__(self, lock: threading.RLock, on_empty: Callable[[Subscriptions], None] | None = None) -> None:
        self.lock = lock
        self.on_empty = on_empty  # called (the lock held) when the last pending waiter is gone
        # key -> (waiter, states)
        self.when: dict[Hashable, tuple[Waiter, tuple[str, ...]]] = {}
        self.when_not: dict[Hashable, tuple[Waiter, tuple[str, ...]]] = {}
        # key -> (waiter, states, times)
        self.when_time: dict[Hashable, tuple[Waiter, tuple[str, ...], tuple[int, ...]]] = {}
        # key -> (waiter, state, args)
        self.when_args: dict[Hashable, tuple[Waiter, str, dict[str, Any]]] = {}
        self.query: dict[Waiter, Callable[[Clock], bool]] = {}
        self.queue: dict[Waiter, int] = {}
        self._where: dict[Waiter, tuple[dict[Any, Any], Hashable]] = {}
        # states with a when_args waiter, so the final phase can skip the lookup
        self.args_states: dict[str, int] = {}

    @property
    def clock_based(self) -> bool:
        """True when some waiter depends on ticks."""
        return bool(self.when or self.when_not or self.when_time)

    def register(self, table: dict[Any, Any], key: Hashable, entry: Any, waiter: Waiter,
                 ctx: Ctx | None) -> None:
        table[key] = entry
        self._where[waiter] = (table, key)
        waiter._on_cancel = self._forget
        if table is self.when_args:
            st = entry[1]
            self.args_states[st] = self.args_states.get(st, 0) + 1
        if ctx is not None:
            waiter._end_with(ctx)

    def _forget(self, waiter: Waiter) -> None:
        with self.lock:
            where = self._where.pop(waiter, None)
            if where is not None:
                table, key = where
                entry = table.pop(key, None)
                if table is self.when_args and entry is not None:
                    st = entry[1]
                    n = self.args_states.get(st, 1) - 1
                    if n <= 0:
                        self.args_states.pop(st, None)
                    else:
                        self.args_states[st] = n
            else:
                self.query.pop(waiter, None)
                self.queue.pop(waiter, None)
            if self.on_empty is not None and not (self._where or self.query or self.queue):
                self.on_empty(self)

    def take_due_by_clock(self, index: dict[str, int], time: list[int]) -> list[Waiter]:
        """The waiters of when/when_not/when_time whose condition holds for ``time``, taken out of their tables
        here, under the lock that read the clock: their end then takes no lock of the machine again (no
        ``_forget``). Call ``settle`` once they are resolved."""
        # for-else loops, not all()/any() over generators, and no loop over an empty table: this runs for every
        # clock change of every mirror
        due: list[Waiter] = []
        if self.when:
            keys = []
            for key, (w, states) in self.when.items():
                for s in states:
                    if not time[index[s]] & 1:
                        break
                else:
                    keys.append(key)
                    due.append(w)
            if keys:
                self._take(self.when, keys)
        if self.when_not:
            keys = []
            for key, (w, states) in self.when_not.items():
                for s in states:
                    if time[index[s]] & 1:
                        break
                else:
                    keys.append(key)
                    due.append(w)
            if keys:
                self._take(self.when_not, keys)
        if self.when_time:
            keys = []
            for key, (w, states, times) in self.when_time.items():
                for s, t in zip(states, times):  # noqa: B905  same length (when_time checked); a keyword costs here
                    if time[index[s]] < t:
                        break
                else:
                    keys.append(key)
                    due.append(w)
            if keys:
                self._take(self.when_time, keys)
        return due

    def _take(self, table: dict[Hashable, Any], keys: list[Hashable]) -> None:
        where = self._where
        for key in keys:
            w = table.pop(key)[0]
            del where[w]
            # taken out here: its end must not look for it again (a cancel racing this one finds nothing: fine)
            w._on_cancel = None

    def settle(self) -> None:
        """After taken waiters were resolved: back to the shared empty registry if none is left (without the lock
        when some are: the usual case, a waiter re-armed in the callback of the one that ended)."""
        if self.on_empty is not None and not (self._where or self.query or self.queue):
            with self.lock:
                if not (self._where or self.query or self.queue):
                    self.on_empty(self)

    def due_by_queue(self, done_tick: int) -> list[Waiter]:
        return [w for w, t in self.queue.items() if done_tick >= t]

    def due_by_args(self, state: str, args: dict[str, Any]) -> list[Waiter]:
        due = []
        for w, st, want in self.when_args.values():
            if st != state:
                continue
            try:
                if all(k in args and args[k] == v for k, v in want.items()):
                    due.append(w)
            except Exception:  # a value whose == raises does not match; the other waiters still do
                pass
        return due

    def all_waiters(self) -> list[Waiter]:
        out: list[Waiter] = [e[0] for e in self.when.values()]
        out += [e[0] for e in self.when_not.values()]
        out += [e[0] for e in self.when_time.values()]
        out += [e[0] for e in self.when_args.values()]
        out += list(self.query) + list(self.queue)
        return out


NO_SUBS = Subscriptions(threading.RLock())  # shared by machines that have no waiter yet: never written


def own_subs(mach: Machine) -> Subscriptions:
    """The machine's own ``Subscriptions``, made on its first waiter (call with ``mach._lock`` held): until then it
    shares the empty ``NO_SUBS``, which only ever answers that nothing waits."""
    subs = mach._subs
    if subs is NO_SUBS:
        subs = mach._subs = Subscriptions(mach._lock, partial(_emptied, weakref.ref(mach)))
        mach._refresh_plain()
    return subs


def _emptied(ref: weakref.ref[Machine], subs: Subscriptions) -> None:
    """The machine's last waiter is gone: back to the shared empty registry, and maybe to the plain path (the lock
    held; a new waiter makes a new registry)."""
    mach = ref()
    if mach is not None and mach._subs is subs:
        mach._subs = NO_SUBS
        mach._refresh_plain()


def new_waiter(mach: Machine, table_name: str, key: Any, entry_fn: Callable[[Waiter], Any],
               ready: Callable[[], bool], ctx: Ctx | None) -> Waiter:
    """The waiter registered in the table ``table_name`` (``when``, ``when_not``, ``when_time``, ``when_args``)
    under ``key`` (shared by equal subscriptions), or one already ended: True when ``ready()`` holds now, False
    on a disposed machine or an ended ``ctx``."""
    if mach._disposed or mach._disposing:
        return resolved_waiter(False)
    if ctx is not None and ctx.done:
        return resolved_waiter(False)
    with mach._lock:  # ticks change under the lock, so ready() and the registration see one clock
        if ready():
            return resolved_waiter(True)
        subs = own_subs(mach)
        table: dict[Any, Any] = getattr(subs, table_name)
        existing = table.get(key)
        if existing is not None:
            w: Waiter = existing[0]
            return w
        w = Waiter()
        subs.register(table, key, entry_fn(w), w, ctx)
        return w


def when_time(mach: Machine, states: Iterable[str], times: Iterable[int], ctx: Ctx | None) -> Waiter:
    """See ``Machine.when_time``."""
    # new_waiter's steps inline, without its closures, and few calls: a mirror's user re-arms one of these per push
    # (in CPython 3.11 each builtin called costs about as much as ten lines of plain bytecode)
    names = (states,) if isinstance(states, str) else tuple(states)
    ts = tuple(times)
    for v in ts:
        if v.__class__ is not int:  # ints as they are; anything else through int(), as given
            ts = tuple(map(int, ts))
            break
    index = mach._c.index
    idxs = []
    try:
        for s in names:
            idxs.append(index[s])
    except (KeyError, TypeError):
        mach._check_names(names)  # the error a check gives (StateError, or TypeError for a non-str)
        raise
    if not names or len(names) != len(ts):
        raise ValueError(f"when_time: states and times must have the same length > 0 "
                         f"({len(names)} != {len(ts)}) (machine {mach._id})")
    if mach._disposed or mach._disposing or (ctx is not None and ctx.done):
        return resolved_waiter(False)
    key = (names, ts, ctx)
    lock = mach._lock
    # acquire and release, not ``with``: half the cost, on this path of every push
    lock.acquire()
    try:  # ticks change under the lock, so the check and the registration see one clock
        t = mach._time
        for i, v in zip(idxs, ts):  # noqa: B905  same length, checked above
            if t[i] < v:
                break
        else:
            return resolved_waiter(True)
        subs = mach._subs
        if subs is NO_SUBS:
            subs = own_subs(mach)
        table = subs.when_time
        existing = table.get(key)
        if existing is not None:
            return existing[0]
        w = Waiter()
        table[key] = (w, names, ts)  # Subscriptions.register's steps, for this table
        subs._where[w] = (table, key)
        w._on_cancel = subs._forget
        if ctx is not None:
            w._end_with(ctx)
        return w
    finally:
        lock.release()


def when_args(mach: Machine, state: str, args: Mapping[str, Any], ctx: Ctx | None) -> Waiter:
    """See ``Machine.when_args``."""
    want = dict(args)
    try:
        key: Any = (state, frozenset(want.items()), ctx)
    except TypeError:  # unhashable values: no reuse
        key = (state, id(want), ctx)
    return new_waiter(mach, "when_args", key, lambda w: (w, state, want), lambda: False, ctx)


def when_query(mach: Machine, fn: Callable[[Clock], bool], ctx: Ctx | None) -> Waiter:
    """See ``Machine.when_query``: never shared, never resolved at once."""
    if mach._disposed or mach._disposing or (ctx is not None and ctx.done):
        return resolved_waiter(False)
    w = Waiter()
    with mach._lock:
        subs = own_subs(mach)
        subs.query[w] = fn
        w._on_cancel = subs._forget
        w._end_with(ctx)
    return w


def when_queue(mach: Machine, tick: int) -> Waiter:
    """See ``Machine.when_queue``."""
    if tick <= mach._done_tick or tick < Result.QUEUED:
        return resolved_waiter(True)
    if mach._disposed or mach._disposing:
        return resolved_waiter(False)
    with mach._lock:
        if tick <= mach._done_tick:
            return resolved_waiter(True)
        w = Waiter()
        subs = own_subs(mach)
        subs.queue[w] = tick
        w._on_cancel = subs._forget
    return w


def check_subs(mach: Machine) -> None:
    """Resolve the clock-based and query waiters whose condition holds (after every change of the clock)."""
    subs = mach._subs
    if not (subs.when or subs.when_not or subs.when_time or subs.query):
        return  # nothing waits on the clock: no lock taken
    due: list[Waiter] = []
    with mach._lock:
        if subs.clock_based:
            due = subs.take_due_by_clock(mach._c.index, mach._time)
        queries = list(subs.query.items()) if subs.query else []
    held: list[Waiter] = []  # due queries: still in their table, their end forgets them
    if queries:
        clock = mach.clock()
        for w, fn in queries:
            try:
                ok = bool(fn(clock))
            except Exception as exc:
                mach._log(LogLevel.OPS, f"[when_query] raised {safe_repr(exc)}")
                ok = False
            if ok:
                held.append(w)
    for w in due:
        w._resolve(True)
    for w in held:
        w._resolve(True)
    if due:
        subs.settle()


def resolve_queue_waiters(mach: Machine) -> None:
    """Resolve the ``when_queue`` waiters whose tick is done."""
    with mach._lock:
        due = mach._subs.due_by_queue(mach._done_tick)
    for w in due:
        w._resolve(True)


def match_args(mach: Machine, state: str, args: dict[str, Any]) -> None:
    """Resolve the ``when_args`` waiters of ``state`` (just entered) that ``args`` matches."""
    with mach._lock:
        due = mach._subs.due_by_args(state, args)
    for w in due:
        w._resolve(True)
