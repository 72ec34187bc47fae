"""Subscriptions to a machine's transitions, for the ``watch`` command.

A ``RemoteMachine`` pushes updates through ``on_update(fn)``; a local ``machine.Machine`` is watched with a
tracer. Both produce the same update dict: ``time`` (list, index order), ``added``, ``removed``, ``ticked``
(multi states re-entered), ``mutations`` (``[{"type", "called", "args"}]``, may be empty).
"""

from __future__ import annotations

import threading
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

    def on_records(recs: list[Any], lost: int) -> None:
        _updates(names, recs, fn)
        if lost:
            dropped(lost)

    return _watch(conn, on_records, None if every else list(names))


def subscribe_link_lazily(conn: Any, ids: set[str], every: bool, fn: Callable[[str, float, Update], Any],
                          dropped: Callable[[int], Any], failed: Callable[[BaseException], Any]
                          ) -> Callable[[], None] | None:
    """:func:`subscribe_link` for machines known by id alone (no listing yet): a daemon sends the state names with
    each machine's first records; an older one's are asked once its first record comes (a fleet's watch starts at
    once, and only daemons with transitions are listed), and records wait for them in order. ``failed(exc)``: that
    listing failed."""
    from transport.fleet_calls import watched_names

    lock = threading.Lock()
    names: dict[str, list[str]] | None = None
    waiting: list[tuple[list[Any], int]] = []  # pushes that came before the names

    def fetch() -> None:
        nonlocal names
        try:
            infos = conn.machines()
        except BaseException as e:  # noqa: BLE001 - told to the command's thread
            with lock:
                waiting.clear()  # the next push asks again: nothing piles up while the names can't be had
            failed(e)
            return
        got = {i["id"]: i.get("states") or [] for i in infos if i.get("id") in ids}
        with lock:  # the pushes that waited go first, in order; later ones find the names
            for recs, lost in waiting:
                _updates(got, recs, fn)
                if lost:
                    dropped(lost)
            waiting.clear()
            names = got

    def on_records(recs: list[Any], lost: int) -> None:  # on the client's I/O thread: never a call here
        with lock:
            if names is None and not waiting:
                sent = {r.machine: watched_names(conn, r.machine) for r in recs if r.machine in ids}
                if None not in sent.values():  # sent with the records: no listing to ask for
                    _updates(sent, recs, fn)  # type: ignore[arg-type]
                    if lost:
                        dropped(lost)
                    return
            if names is None:
                waiting.append((recs, lost))
                if len(waiting) == 1:
                    threading.Thread(target=fetch, daemon=True, name="arpc-watch-names").start()
                return
            _updates(names, recs, fn)
        if lost:
            dropped(lost)

    return _watch(conn, on_records, None if every else sorted(ids))


def _updates(names: dict[str, list[str]], recs: list[Any], fn: Callable[[str, float, Update], Any]) -> None:
    """Transition records as watch updates (those of ``names``' machines)."""
    from machine.transition import tick_changes

    for r in recs:
        ns = names.get(r.machine)
        if ns is None:
            continue
        added, removed, ticked = tick_changes(ns, r.before, r.after)
        fn(r.machine, r.at_ms / 1000, {"time": list(r.after), "added": added, "removed": removed,
                                       "ticked": ticked, "mutations": [{"type": r.type, "called": r.called,
                                                                       "args": r.args or {}}]})


def _watch(conn: Any, on_records: Callable[[list[Any], int], Any], ids: list[str] | None
           ) -> Callable[[], None] | None:
    watch = getattr(conn, "watch_machines", None)
    if watch is None:
        return None
    try:
        return watch(on_records, ids)  # type: ignore[no-any-return]
    except Exception as e:
        if getattr(e, "code", None) == "unsupported":  # an older daemon
            return None
        raise
