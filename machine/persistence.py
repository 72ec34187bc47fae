"""Clocks and schemas from outside a transition: ``export``, ``import_data``, ``set_schema`` and a mirror's
``set_clock`` (called through ``machine.mirror``).

Writes the machine's ``_time``, ``_active``, ``_machine_tick``, ``_c`` and the binding caches, only while no
transition runs (checked under the lock); ``set_clock`` also sets the queue ticks a mirror copies from its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import SchemaError
from .handlers import Binding
from .schema import Compiled, State, normalize
from .subscriptions import check_subs, resolve_queue_waiters

if TYPE_CHECKING:
    from .machine import Machine


def export(mach: Machine) -> dict[str, Any]:
    """See ``Machine.export``."""
    return {
        "id": mach._id,
        "state_names": list(mach._c.names),
        "time": list(mach._time),
        "queue_tick": mach._queue_tick,
        "machine_tick": mach._machine_tick,
    }


def import_data(mach: Machine, data: Mapping[str, Any]) -> None:
    """See ``Machine.import_data``."""
    c = mach._c
    if data.get("id") != mach._id:
        raise SchemaError(f"import ID mismatch: {data.get('id')!r} != {mach._id!r}")
    names = list(data.get("state_names") or [])
    times = list(data.get("time") or [])
    if len(names) != len(c.names) or len(times) != len(names):
        raise SchemaError("schema error: importing diff state len")
    for n in names:
        if n not in c.index:
            raise SchemaError(f"state unknown: {n}")
    if any(not isinstance(t, int) or t < 0 for t in times):
        raise SchemaError("schema error: ticks must be non-negative ints")
    with mach._lock:
        if mach._processing:
            raise SchemaError("schema error: cannot import during a transition")
        new_time = [0] * len(c.names)
        for n, t in zip(names, times, strict=True):
            new_time[c.index[n]] = t
        mach._time = new_time
        mach._active = tuple(n for i, n in enumerate(c.names) if new_time[i] & 1)
        mach._machine_tick = int(data.get("machine_tick") or 0) + 1
        ctxs = list(mach._state_ctxs.values())
        mach._state_ctxs.clear()
        mach._refresh_plain()  # no state contexts left (see machine.plain)
    for ctx in ctxs:
        ctx.cancel()
    check_subs(mach)
    if "MachineRestored" in c.index:
        mach.add("MachineRestored")


def set_schema(mach: Machine, schema: Mapping[str, State | Mapping[str, Any]], owner: object = None) -> None:
    """See ``Machine.set_schema``; tracers get ``owner`` as the machine when given (a mirror's holder)."""
    new = normalize(schema, add_exception=False)
    old_names = mach._c.names
    if len(new) <= len(old_names):
        raise SchemaError(f"schema error: new schema too short (> {len(old_names)} states)")
    missing = [n for n in old_names if n not in new]
    if missing:
        raise SchemaError(f"schema error: new schema lacks states: {' '.join(missing)}")
    compiled = Compiled(new, mach._c.topo)
    if compiled.errors:
        raise SchemaError("; ".join(compiled.errors))
    with mach._lock:
        if mach._processing:
            raise SchemaError("schema error: cannot set schema during a transition")
        old_schema = dict(mach._c.schema)
        old_index = mach._c.index
        new_time = [0] * len(compiled.names)
        for n, i in compiled.index.items():
            j = old_index.get(n)
            if j is not None:
                new_time[i] = mach._time[j]
        mach._c = compiled
        mach._time = new_time
        mach._bound = {}
        mach._bindings = [Binding(b.obj, b.seq, compiled.index) for b in mach._bindings]
    mach._emit("schema_change", mach if owner is None else owner, old_schema)


def set_clock(mach: Machine, new_time: list[int], queue_tick: int | None = None,
              machine_tick: int | None = None, changed: list[int] | None = None, notify: bool = True) -> None:
    """Replace the ticks (a mirror receiving its source's clock): ends the contexts of the states whose tick
    changed and resolves waiters.

    ``changed``: the indexes whose tick differs, when the caller knows them (a diff), in ascending order and
    without repeats; then ``new_time`` is taken as is, not copied. ``notify=False``: the waiters are left for
    ``notify_waiters`` (a mirror runs its handlers first, as a local machine does)."""
    names = mach._c.names
    if len(new_time) != len(names):
        raise SchemaError(f"schema error: clock of {len(new_time)} states for {len(names)} (machine {mach._id})")
    due = None
    lock = mach._lock
    lock.acquire()  # acquire and release, not ``with``: half the cost, on every push of every mirror
    try:
        old = mach._time
        if changed is None:
            changed = [i for i in range(len(names)) if old[i] != new_time[i]]
            new_time = list(new_time)
        mach._time = new_time
        for i in changed:
            if (old[i] ^ new_time[i]) & 1:  # a state switched (not only a multi state re-entered)
                mach._active = tuple(n for j, n in enumerate(names) if new_time[j] & 1)
                break
        if queue_tick is not None:
            # the source's queue: what it dequeued is done there, so when_queue can resolve here
            mach._queue_tick = mach._done_tick = queue_tick
        if machine_tick is not None:
            mach._machine_tick = machine_tick
        ctxs = []
        if mach._state_ctxs:
            for i in changed:
                c = mach._state_ctxs.pop(names[i], None)
                if c is not None:
                    ctxs.append(c)
        subs = mach._subs
        if notify and changed and not ctxs and not subs.query:
            # the usual push: the waiters due at this clock, found and taken out of their tables under the lock
            # that set it (check_subs would take it again); with contexts to end or queries to run, check_subs
            # does it after those
            due = subs.take_due_by_clock(mach._c.index, new_time)
    finally:
        lock.release()
    for c in ctxs:
        c.cancel()
    if notify:
        if due is not None:
            if due:
                for w in due:
                    w._resolve(True)
                subs.settle()
        elif changed:
            check_subs(mach)
        if mach._subs.queue:
            resolve_queue_waiters(mach)


def notify_waiters(mach: Machine) -> None:
    """Resolve the waiters the current clock satisfies (after ``set_clock(..., notify=False)``)."""
    check_subs(mach)
    if mach._subs.queue:
        resolve_queue_waiters(mach)
