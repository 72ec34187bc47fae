"""``RemoteMachine``: a local mirror of a machine served by an endpoint, with the ``Machine`` API.

Reads and waits run on the mirror (no I/O). Mutations are one round trip and return with the mirror already
updated; pushes from the server keep it current. ``when_args`` is evaluated on the server.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from machine import Ctx, Machine, Result, SchemaError, State, Waiter
from machine.log import LazyLogger
from machine.transition import tick_changes

from . import protocol as P
from . import tracecontext
from .errors import TransportError
from .history_client import HistoryReader

if TYPE_CHECKING:
    from .client import Client

log = LazyLogger("transport.remote")  # logging is imported on first use


_RESULTS = (Result.EXECUTED, Result.CANCELED)  # looked up: Result(r) goes through the enum machinery each call


def _result(r: Any) -> int:
    r = int(r)
    if 0 <= r < 2:
        return _RESULTS[r]
    return Result(r) if r < Result.QUEUED else r


class RemoteMachine(HistoryReader, Machine):
    """A mirror of a remote machine. Get one with ``client.machine(id)``; ``close()`` ends the subscription."""

    __slots__ = ("_client", "_update_cbs", "_args_reg", "_muts", "_tokens")

    def __init__(self, client: Client, info: Any, mutations: bool = False) -> None:
        if not isinstance(info, dict):
            raise TransportError("malformed sub reply", code=P.INTERNAL)
        schema = P.schema_from_wire(info.get("schema"))
        if list(schema) != info.get("names"):
            raise TransportError("sub reply: schema and names differ", code=P.INTERNAL)
        super().__init__(schema, id=str(info["id"]), parent=info.get("parent_id"), tags=info.get("tags") or ())
        self._client = client
        self._hist_init()
        self._update_cbs: list[Callable[[dict[str, Any]], Any]] = []
        self._args_reg: dict[int, tuple[str, dict[str, Any], Waiter]] = {}
        self._muts = mutations
        self._tokens = itertools.count(1)
        self._set_clock(list(info["time"]), int(info["qtick"]), int(info["mtick"]))

    # ------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        """True while the client's link to the server is up."""
        return self._client.connected and not self._disposed

    @property
    def client(self) -> Client:
        """The client this mirror belongs to."""
        return self._client

    def on_update(self, fn: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """Call ``fn(update)`` for each clock change received; returns a function that unsubscribes ``fn``.

        ``update`` = ``{"time", "added", "removed", "ticked", "mutations"}``; ``mutations`` lists the source's
        mutations behind the change (``{"type", "called", "args"}``). A push that sums several transitions of the
        source is reported as one update per transition, in order (the last 64 of them; older ones are summed
        into the first); the mirror already shows the push's last clock. Called on the thread that read the
        push: the process's one client I/O thread, shared by every client, so ``fn`` must not block.
        """
        if self._muts:
            self._update_cbs.append(fn)
        else:
            def subscribed(info: Any) -> None:
                self._on_resub(info)
                # from this clock on every push carries its mutations: no summed step reaches fn first
                self._update_cbs.append(fn)

            self._muts = True
            try:
                self._client._call(P.SUB, self._id, {"muts": True}, on_reply=subscribed)
            except BaseException:
                self._muts = False
                raise

        def off() -> None:
            try:
                self._update_cbs.remove(fn)
            except ValueError:
                pass

        return off

    # ------------------------------------------------------------------ mutations over the wire

    def _remote(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        called = self._called(states)
        a = self._args(args)
        if self._disposing:
            self._client._raise_if_closed()  # a closed client's mirror says so; a mirror closed alone: Canceled
            return Result.CANCELED
        body: dict[str, Any] = {"s": list(called)}
        if a is not None:
            body["a"] = a
        if tracecontext.inject is not None:     # the caller's span becomes the remote transition's parent
            tc = tracecontext.inject()
            if tc:
                body["tc"] = tc
        res = self._client._call(kind, self._id, body, on_reply=self._on_mut_reply)
        if res[1] is None:
            # the server has no subscription of ours (it restarted or forgot our session): this mirror subscribes
            # again before returning, the client's other mirrors right after
            self._client._call(P.SUB, self._id, {"muts": self._muts}, on_reply=self._on_resub)
            if self._client.connected:
                self._client._session_lost("has no subscription of ours")
        return _result(res[0])

    def add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Add on the server; returns its result with the mirror updated. Raises TransportError on failure."""
        return self._remote(P.ADD, states, args)

    def remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Remove on the server (see ``add``)."""
        return self._remote(P.REMOVE, states, args)

    def set(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Set on the server (see ``add``)."""
        return self._remote(P.SET, states, args)

    def toggle(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Remove when all of ``states`` are active on the mirror, else add."""
        self._called(states)
        if states and self.is_active(*states):
            return self.remove(*states, args=args)
        return self.add(*states, args=args)

    def add_ns(self, *states: str, args: Mapping[str, Any] | None = None) -> None:
        """Add without waiting for a reply (pipelining); call ``sync()`` after a batch to see the result."""
        called = self._called(states)
        a = self._args(args)
        body: dict[str, Any] = {"s": list(called)}
        if a is not None:
            body["a"] = a
        self._client._notify(P.ADD_NS, self._id, body, block=True)

    def sync(self) -> None:
        """Fetch the full clock; returns once the mirror has it (after every earlier request was handled)."""
        self._client._call(P.SYNC, self._id, {}, on_reply=self._on_sync)

    def add_err_state(self, state: str, err: BaseException | None,
                      args: Mapping[str, Any] | None = None) -> int:
        """Add ``state`` and Exception on the server; the error travels as its class name and message."""
        self._called((state,))
        a = self._args(args)
        if self._disposing:
            self._client._raise_if_closed()
        if err is None or self._disposing:
            return Result.CANCELED
        if not isinstance(err, BaseException):
            raise TypeError(f"err must be an exception, got {type(err).__name__}")
        self._err = err
        body: dict[str, Any] = {"state": state, "type": type(err).__name__, "msg": str(err)}
        if a is not None:
            body["a"] = P.sanitize(a)
        res = self._client._call(P.ADD_ERR, self._id, body, on_reply=self._on_mut_reply)
        return _result(res[0])

    def can_add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``add`` on the server."""
        return self._can(P.ADD, states, args)

    def can_remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``remove`` on the server."""
        return self._can(P.REMOVE, states, args)

    def _can(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        called = self._called(states)
        a = self._args(args)
        body: dict[str, Any] = {"type": kind, "s": list(called)}
        if a is not None:
            body["a"] = a
        return _result(self._client._call(P.CAN, self._id, body))

    def set_schema(self, schema: Mapping[str, State | Mapping[str, Any]]) -> None:
        """Not possible on a mirror: its schema follows the source's."""
        raise SchemaError(f"schema error: {self._id} is a remote machine; change the schema on its source")

    # ------------------------------------------------------------------ waiting on the server

    def when_args(self, state: str, args: Mapping[str, Any], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` is entered on the server by a mutation whose args include ``args``."""
        self._check_names((state,))
        want = dict(args)
        if self._disposed or (ctx is not None and ctx.done):
            w = Waiter()
            w.cancel()
            return w
        token = next(self._tokens)
        w = Waiter()
        self._args_reg[token] = (state, want, w)

        def forget(_: Waiter) -> None:
            if self._args_reg.pop(token, None) is not None and not self._disposed:
                try:
                    self._client._notify(P.WHEN_ARGS_CANCEL, self._id, {"token": token})
                except TransportError:
                    pass

        w._on_cancel = forget
        try:
            self._client._call(P.WHEN_ARGS, self._id, {"state": state, "args": want, "token": token})
        except BaseException:
            self._args_reg.pop(token, None)
            raise
        if ctx is not None:
            w._ctx, w._ctx_cb = ctx, w.cancel
            ctx._add_callback(w.cancel)
        return w

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """End the subscription and dispose the mirror (the source is untouched)."""
        if self._disposed:
            return
        try:
            if self._client.connected:
                self._client._notify(P.UNSUB, self._id, {})
        except TransportError:
            pass
        with self._client._lock:
            if self._client._mirrors.get(self._id) is self:
                del self._client._mirrors[self._id]
        self._local_dispose()

    def dispose(self, timeout: float = 1.0) -> None:
        """Same as ``close()``: disposing a mirror never disposes its source."""
        self.close()

    def _local_dispose(self) -> None:
        for _, _, w in list(self._args_reg.values()):
            w.cancel()
        self._args_reg.clear()
        # local only: no Start removal, which on a mirror would be a remote call changing the source
        self._dispose(1.0, stop_start=False)

    # ------------------------------------------------------------------ called on the client's I/O thread

    def _on_mut_reply(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) != 2:
            raise ValueError("a mutation reply is [result, update]")
        if body[1] is not None:
            self._apply_update(body[1], None)

    def _on_clk(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) < 5:
            raise ValueError("a clock push is [idxs, deltas, qtick, mtick, checksum, muts?]")
        self._apply_update(body[:5], body[5] if len(body) > 5 else None)

    def _apply_update(self, upd: list[Any], muts: Any) -> None:
        if self._disposed:
            return
        idxs, deltas, q, mt, csum = upd
        new = self._time[:]
        n = len(new)
        changed: list[int] | None = []
        last = -1
        try:
            for i, d in zip(idxs, deltas, strict=True):
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
        before = self._time
        # the push's clock at once: a callback below that mutates gets its reply's diff against this clock
        self._set_clock(new, q, mt, changed)
        if not self._update_cbs:
            return
        for update in _steps(self.state_names, before, new, muts):
            if not (update["added"] or update["removed"] or update["ticked"] or update["mutations"]):
                continue
            for fn in list(self._update_cbs):
                try:
                    fn(update)
                except Exception:
                    log.exception("on_update callback failed")

    def _resync(self) -> None:
        self._client._call_async(P.SYNC, self._id, {}, self._on_sync)

    def _on_sync(self, body: Any) -> None:
        if not isinstance(body, list) or len(body) != 3:
            raise ValueError("a sync reply is [time, qtick, mtick]")
        t, q, mt = body
        if self._disposed or len(t) != len(self._time):
            return
        self._update(list(t), int(q), int(mt), None)

    def _resubscribe(self) -> None:
        self._client._call_async(P.SUB, self._id, {"muts": self._muts}, self._on_resub)
        self._refollow()
        for token, (state, want, _) in list(self._args_reg.items()):
            self._client._call_async(P.WHEN_ARGS, self._id, {"state": state, "args": want, "token": token},
                                     lambda body: None)

    def _on_resub(self, info: Any) -> None:
        if self._disposed or not isinstance(info, dict):
            return
        if info.get("names") != self.state_names:
            self._on_schema(info)
            return
        self._update(list(info["time"]), int(info["qtick"]), int(info["mtick"]), None)

    def _on_schema(self, info: Any) -> None:
        if self._disposed or not isinstance(info, dict):
            return
        schema = P.schema_from_wire(info.get("schema"))
        if list(schema) != self.state_names:
            try:
                Machine.set_schema(self, schema)
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
            entry[2]._resolve(bool(ok))


def _steps(names: list[str], before: list[int], after: list[int], muts: Any) -> list[dict[str, Any]]:
    """One update per source transition when the push carries each one's clock, else one update for the sum;
    the last one always ends at ``after``."""
    steps: list[dict[str, Any]] = []
    loose: list[dict[str, Any]] = []  # 3-element records, without a clock of their own (the protocol allows them)
    prev = before
    if isinstance(muts, list):
        for m in muts:
            if not isinstance(m, list) or len(m) < 3:
                continue
            mut = {"type": m[0], "called": m[1], "args": m[2]}
            t = m[3] if len(m) > 3 else None
            if not (isinstance(t, list) and len(t) == len(names) and all(type(x) is int for x in t)):
                (steps[-1]["mutations"] if steps else loose).append(mut)
                continue
            if t == prev or any(x < y for x, y in zip(t, prev, strict=True)) \
                    or any(x > y for x, y in zip(t, after, strict=True)):
                continue  # changed nothing, already shown (this client's own mutation), or out of step
            a, r, k = tick_changes(names, prev, t)
            steps.append({"time": list(t), "added": a, "removed": r, "ticked": k, "mutations": [mut]})
            prev = t
    if loose and steps:
        steps[0]["mutations"][:0] = loose
    if loose and not steps:  # no per-transition clocks at all: one update for the sum, as before
        a, r, k = tick_changes(names, before, after)
        return [{"time": list(after), "added": a, "removed": r, "ticked": k, "mutations": loose}]
    if prev != after or not steps:  # what the mutations kept do not explain (e.g. an auto state, a sync)
        a, r, k = tick_changes(names, prev, after)
        steps.append({"time": list(after), "added": a, "removed": r, "ticked": k, "mutations": []})
    return steps


if TYPE_CHECKING:
    from machine.api import MachineApi

    def _mirror_is_a_machine_api(m: RemoteMachine) -> MachineApi:
        return m  # mypy --strict proves that RemoteMachine satisfies the protocol
