"""Subscriptions to a machine's transitions, for the ``watch`` command.

A ``RemoteMachine`` pushes updates through ``on_update(fn)``; a local ``machine.Machine`` is watched with a
tracer. Both produce the same update dict: ``time`` (list, index order), ``added``, ``removed``, ``ticked``
(multi states re-entered), ``mutations`` (``[{"type", "called", "args"}]``, may be empty).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Update = dict[str, Any]


def subscribe(mach: Any, fn: Callable[[Update], Any]) -> Callable[[], None]:
    """Call ``fn(update)`` for every accepted transition of ``mach``; returns the unsubscribe function."""
    on_update = getattr(mach, "on_update", None)
    if on_update is not None:
        live = [True]

        def cb(update: Update) -> None:
            if live[0]:
                fn(update)

        handle = on_update(cb)

        def unsub_remote() -> None:
            live[0] = False
            handle()

        return unsub_remote
    return _subscribe_local(mach, fn)


def _subscribe_local(mach: Any, fn: Callable[[Update], Any]) -> Callable[[], None]:
    from machine import Tracer, Transition
    from machine.transition import tick_changes

    class _UpdateFeed(Tracer):  # an accepted transition -> one watch update
        def transition_end(self, tx: Transition) -> None:
            if not tx.is_accepted or tx.is_check:
                return
            names = mach.state_names
            before, after = list(tx.time_before), list(tx.time_after)
            if before == after:
                return
            added, removed, ticked = tick_changes(names, before, after)
            m = tx.mutation
            fn({"time": after, "added": added, "removed": removed, "ticked": ticked,
                "mutations": [{"type": str(m.type), "called": list(m.called), "args": dict(m.args or {}),
                               "auto": bool(m.is_auto)}]})

    tracer = _UpdateFeed()
    mach.bind_tracer(tracer)
    return lambda: mach.detach_tracer(tracer)


def subscribe_link(conn: Any, names: dict[str, list[str]], every: bool, fn: Callable[[str, float, Update], Any],
                   dropped: Callable[[int], Any]) -> Callable[[], None] | None:
    """One subscription for the machines ``names`` (id -> state names) of one connection, without a mirror per
    machine (``transport.Client.watch_machines``): ``fn(id, time, update)`` for each transition, ``dropped(n)``
    when the server dropped ``n`` records for us; ``every``: they are all the connection's machines. Returns the
    unsubscribe function, or None when the connection has no such subscription (then watch machine by machine)."""
    watch = getattr(conn, "watch_machines", None)
    if watch is None:
        return None
    from machine.transition import tick_changes

    def on_records(recs: list[Any], lost: int) -> None:
        for r in recs:
            ns = names.get(r.machine)
            if ns is None:
                continue
            added, removed, ticked = tick_changes(ns, r.before, r.after)
            fn(r.machine, r.at_ms / 1000, {"time": list(r.after), "added": added, "removed": removed,
                                           "ticked": ticked, "mutations": [{"type": r.type, "called": r.called,
                                                                           "args": r.args or {}}]})
        if lost:
            dropped(lost)

    try:
        return watch(on_records, None if every else list(names))  # type: ignore[no-any-return]
    except Exception as e:
        if getattr(e, "code", None) == "unsupported":  # an older daemon
            return None
        raise
