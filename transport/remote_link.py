"""What keeps a mirror current, called on the client's I/O thread: mutation replies, clock pushes, resyncs,
schema pushes, ``when_args`` answers; and the per-transition steps a push is split into, which go to
``on_update`` callbacks and to the final handlers and tracers bound to the mirror (``RemoteMachine``'s base)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from machine import SchemaError, Waiter, mirror
from machine.log import LazyLogger
from machine.transition import tick_changes

from . import protocol as P

if TYPE_CHECKING:
    from machine import Machine

    from .client import Client

log = LazyLogger("transport.remote")


class MirrorLink:
    """The part of ``RemoteMachine`` that applies what the server sends to the private mirror ``_m``."""

    _m: Machine
    _id: str
    _client: Client
    _muts: bool
    _update_cbs: list[Callable[[dict[str, Any]], Any]]
    _args_reg: dict[int, tuple[str, dict[str, Any], Waiter]]

    def _link_init(self) -> None:
        self._steps_q: deque[tuple[mirror.Step, dict[str, Any]]] = deque()
        self._steps_lock = threading.Lock()
        self._draining = False

    def _on_mut_reply(self, body: Any, rec: list[Any] | None = None) -> None:
        if not isinstance(body, list) or len(body) != 2:
            raise ValueError("a mutation reply is [result, update]")
        if body[1] is not None:
            self._apply_update(body[1], [rec] if rec is not None and body[0] == 0 else None)

    def _on_clk(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) < 5:
            raise ValueError("a clock push is [idxs, deltas, qtick, mtick, checksum, muts?]")
        if len(body) == 5:  # no mutation records: the body is the update (no copy made of it)
            self._apply_update(body, None)
        else:
            self._apply_update(body[:5], body[5])

    def _apply_update(self, upd: list[Any], muts: Any) -> None:
        m = self._m
        if m.disposed:
            return
        idxs, deltas, q, mt, csum = upd
        new = mirror.clock_view(m)[:]
        n = len(new)
        changed: list[int] | None = []
        last = -1
        try:
            if len(idxs) != len(deltas):
                raise ValueError("idxs and deltas differ in length")
            for i, d in zip(idxs, deltas):  # noqa: B905  same length (checked: a keyword costs here, every push)
                if not -1 < i < n:
                    raise IndexError(i)
                new[i] += d
                if i <= last:
                    changed = None  # not ascending (no server of ours sends that): compare every tick instead
                elif changed is not None and d:
                    changed.append(i)
                    last = i
        except (IndexError, TypeError, ValueError):
            self._resync()
            return
        if P.checksum(new, q, mt) != csum:
            # a missed update: fetch the full clock instead of guessing
            log.info("%s: checksum mismatch, syncing", self._id)
            self._resync()
            return
        self._update(new, q, mt, muts, changed)

    def _update(self, new: list[int], q: int, mt: int, muts: Any, changed: list[int] | None = None) -> None:
        m = self._m
        if not self._update_cbs and not mirror.has_replay_listeners(m):
            mirror.set_clock(m, new, q, mt, changed)
            return
        before = mirror.clock_view(m)
        # the push's clock at once: a callback below that mutates gets its reply's diff against this clock; its
        # waiters once the handlers and callbacks ran (at the end of the drain), as a local machine resolves them
        # after its final handlers: a task woken by when() sees what the handlers did
        mirror.set_clock(m, new, q, mt, changed, notify=False)
        steps = _steps(m.state_names, before, new, muts)
        with self._steps_lock:
            self._steps_q.extend(steps)
            if self._draining:
                return  # a handler of an earlier step mutated: its steps run after the current ones, in order
            self._draining = True
        try:
            self._drain()
        except BaseException:
            with self._steps_lock:
                self._draining = False
            mirror.notify_waiters(m)
            raise

    def _drain(self) -> None:
        """Each step to the mirror's handlers and tracers, then to the ``on_update`` callbacks, oldest first."""
        q = self._steps_q
        while True:
            with self._steps_lock:
                if not q:
                    self._draining = False  # under the lock: a step queued meanwhile was seen by this loop
                    break
                step, update = q.popleft()
            if not (update["added"] or update["removed"] or update["ticked"] or update["mutations"]):
                continue
            if mirror.has_replay_listeners(self._m):
                mirror.replay(self._m, self, step)
            for fn in list(self._update_cbs):
                try:
                    fn(update)
                except Exception:
                    log.exception("on_update callback failed")
        mirror.notify_waiters(self._m)

    def _resync(self) -> None:
        self._client._call_async(P.SYNC, self._id, {}, self._on_sync)

    def _on_sync(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) != 3:
            raise ValueError("a sync reply is [time, qtick, mtick]")
        t, q, mt = body
        if self._m.disposed or len(t) != len(mirror.clock_view(self._m)):
            return
        self._update(list(t), int(q), int(mt), None)

    def _resubscribe(self) -> None:
        self._client._call_async(P.SUB, self._id, {"muts": self._muts}, self._on_resub)
        self._refollow()
        for token, (state, want, _) in list(self._args_reg.items()):
            self._client._call_async(P.WHEN_ARGS, self._id, {"state": state, "args": want, "token": token},
                                     lambda body: None)

    def _refollow(self) -> None:
        """Follow the history again (``HistoryReader``)."""

    def _on_resub(self, info: Any) -> None:
        if self._m.disposed or not isinstance(info, dict):
            return
        if info.get("names") != self._m.state_names:
            self._on_schema(info)
            return
        self._update(list(info["time"]), int(info["qtick"]), int(info["mtick"]), None)

    def _on_schema(self, info: Any) -> None:
        if self._m.disposed or not isinstance(info, dict):
            return
        schema = P.schema_from_wire(info.get("schema"))
        if list(schema) != self._m.state_names:
            try:
                mirror.follow_schema(self._m, schema, self)
            except SchemaError as exc:
                log.warning("%s: cannot follow the source's schema: %s", self._id, exc)
                return
        self._update(list(info["time"]), int(info["qtick"]), int(info["mtick"]), None)

    def _on_args_ok(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) != 2:
            return
        token, ok = body
        entry = self._args_reg.pop(token, None)
        if entry is not None:
            mirror.resolve_waiter(entry[2], bool(ok))


def _steps(names: list[str], before: list[int], after: list[int],
           muts: Any) -> list[tuple[mirror.Step, dict[str, Any]]]:
    """One step per source transition when the push carries each one's clock, else one step for the sum; the
    last one always ends at ``after``. Each: ((clock before, clock after, its mutation or None), the update
    ``on_update`` callbacks get)."""
    steps: list[tuple[mirror.Step, dict[str, Any]]] = []
    loose: list[dict[str, Any]] = []  # 3-element records, without a clock of their own (the protocol allows them)
    prev = before

    def step(t: list[int], ms: list[dict[str, Any]]) -> tuple[mirror.Step, dict[str, Any]]:
        a, r, k = tick_changes(names, prev, t)
        return (prev, t, ms[0] if len(ms) == 1 else None), {"time": list(t), "added": a, "removed": r, "ticked": k,
                                                   "mutations": ms}

    if isinstance(muts, list):
        for m in muts:
            if not isinstance(m, list) or len(m) < 3:
                continue
            mut = {"type": m[0], "called": m[1], "args": m[2]}
            t = m[3] if len(m) > 3 else None
            if not (isinstance(t, list) and len(t) == len(names) and all(type(x) is int for x in t)):
                (steps[-1][1]["mutations"] if steps else loose).append(mut)
                continue
            if t == prev or any(x < y for x, y in zip(t, prev, strict=True)) \
                    or any(x > y for x, y in zip(t, after, strict=True)):
                continue  # changed nothing, already shown (this client's own mutation), or out of step
            steps.append(step(list(t), [mut]))
            prev = t
    if loose and steps:
        steps[0][1]["mutations"][:0] = loose
    if loose and not steps:  # no per-transition clocks at all: one update for the sum, as before
        return [step(list(after), loose)]
    if prev != after or not steps:  # what the mutations kept do not explain (e.g. an auto state, a sync)
        steps.append(step(list(after), []))
    return steps
