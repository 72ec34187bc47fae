"""``RemoteMachine``: a local mirror of a machine served by an endpoint, with the ``MachineApi``.

It holds a private ``Machine`` with the source's schema and clock, kept current by the server's pushes through
the core's mirror interface (``machine.mirror``). Reads and waits run on that mirror (no I/O). Mutations are one
round trip and return with the mirror already updated. ``when_args`` is evaluated on the server. What only the
source can do (``eval``, ``will_be``, negotiation handlers, ...) raises ``MirrorLimitError`` saying what to do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from machine import Ctx, LogLevel, Machine, Result, SchemaError, State, Tracer, Transition, Waiter, mirror

from . import protocol as P
from . import tracecontext
from .errors import MirrorLimitError, TransportError
from .history_client import HistoryReader
from .plaincall import round_trip
from .remote_link import MirrorLink

if TYPE_CHECKING:
    import asyncio

    from .client import Client

_RESULTS = (Result.EXECUTED, Result.CANCELED)  # looked up: Result(r) goes through the enum machinery each call
EXCEPTION = "Exception"
_MUT_TYPES = {P.ADD: "add", P.REMOVE: "remove", P.SET: "set"}  # as the source's records name them


def _result(r: Any) -> int:
    r = int(r)
    if 0 <= r < 2:
        return _RESULTS[r]
    return Result(r) if r < Result.QUEUED else r


class RemoteMachine(HistoryReader, MirrorLink):
    """A mirror of a remote machine. Get one with ``client.machine(id)``; ``close()`` ends the subscription.

    Not a ``Machine``: it satisfies ``machine.MachineApi`` by composition over a private local machine.
    """

    def __init__(self, client: Client, info: Any, mutations: bool = False) -> None:
        if not isinstance(info, dict):
            raise TransportError("malformed sub reply", code=P.INTERNAL)
        schema = P.schema_from_wire(info.get("schema"))
        if list(schema) != info.get("names"):
            raise TransportError("sub reply: schema and names differ", code=P.INTERNAL)
        self._id = str(info["id"])
        self._m = mirror.new_mirror(schema, self._id, info.get("parent_id"), info.get("tags") or ())
        self._client = client
        self._hist_init()
        self._link_init()
        self._update_cbs: list[Callable[[dict[str, Any]], Any]] = []
        self._args_reg: dict[int, tuple[str, dict[str, Any], Waiter]] = {}
        self._muts = mutations
        self._tokens = itertools.count(1)
        mirror.set_clock(self._m, list(info["time"]), int(info["qtick"]), int(info["mtick"]))

    # ------------------------------------------------------------------ status

    @property
    def connected(self) -> bool:
        """True while the client's link to the server is up."""
        return self._client.connected and not self._m.disposed

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
        self._want_muts(lambda: self._update_cbs.append(fn))

        def off() -> None:
            try:
                self._update_cbs.remove(fn)
            except ValueError:
                pass

        return off

    def _use_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Async final handlers bound to this mirror run on ``loop`` (the asyncio client's)."""
        mirror.set_loop(self._m, loop)

    def _want_muts(self, then: Callable[[], Any]) -> None:
        """Subscribe with mutation records (each transition's clock and args), then call ``then`` (from this
        clock on every push carries its mutations: no summed step reaches what ``then`` adds first)."""
        if self._muts:
            then()
            return

        def subscribed(info: Any) -> None:
            self._on_resub(info)
            then()

        self._muts = True
        try:
            self._client._call(P.SUB, self._id, {"muts": True}, on_reply=subscribed)
        except BaseException:
            self._muts = False
            raise

    # ------------------------------------------------------------------ identity and getters (the mirror's)

    @property
    def id(self) -> str:
        """The source's id."""
        return self._id

    @property
    def parent_id(self) -> str | None:
        """The source's parent id, or None."""
        return self._m.parent_id

    @property
    def tags(self) -> list[str]:
        """The source's tags (a copy)."""
        return self._m.tags

    @property
    def state_names(self) -> list[str]:
        """The source's schema's names in index order."""
        return self._m.state_names

    @property
    def schema(self) -> dict[str, State]:
        """A copy of the source's schema."""
        return self._m.schema

    @property
    def err(self) -> BaseException | None:
        """The last error this mirror sent with ``add_err*`` (the source's own errors: ``errors()``)."""
        return self._m.err

    @property
    def machine_tick(self) -> int:
        """The source's machine tick."""
        return self._m.machine_tick

    @property
    def queue_tick(self) -> int:
        """The source's queue tick, as last pushed."""
        return self._m.queue_tick

    @property
    def queue_len(self) -> int:
        """Mutations waiting in the source's queue: one round trip (``info()``), unlike the other getters."""
        return int(self.info()["queue_len"])

    @property
    def disposed(self) -> bool:
        """True once the mirror is closed (or its source was disposed)."""
        return self._m.disposed

    @property
    def ctx(self) -> Ctx:
        """Done when the mirror is closed or its source disposed."""
        return self._m.ctx

    @property
    def transition(self) -> Transition | None:
        """The source's transition being replayed to this mirror's handlers, or None."""
        return self._m.transition

    @property
    def log_level(self) -> LogLevel:
        """The mirror's own log level (the source logs on its side)."""
        return self._m.log_level

    @log_level.setter
    def log_level(self, value: int | str | LogLevel) -> None:
        self._m.log_level = value

    def active_states(self, *states: str) -> list[str]:
        """Active states in index order, optionally only those among ``states``."""
        return self._m.active_states(*states)

    def tick(self, state: str) -> int:
        """The state's tick (odd = active); 0 for an unknown state."""
        return self._m.tick(state)

    def time(self, *states: str) -> list[int]:
        """Ticks of ``states`` (default: all, in index order)."""
        return self._m.time(*states)

    def clock(self, *states: str) -> dict[str, int]:
        """``{state: tick}`` for ``states`` (default: all)."""
        return self._m.clock(*states)

    def index(self, state: str) -> int:
        """The state's position in the schema; -1 when unknown."""
        return self._m.index(state)

    def switch(self, *states: str) -> str | None:
        """The first of ``states`` that is active, or None."""
        return self._m.switch(*states)

    def string_all(self) -> str:
        """``(Foo:1) [Bar:0 Baz:2]``: active states, then the inactive ones, with ticks."""
        return self._m.string_all()

    def inspect(self, *states: str) -> str:
        """A block per state: active flag and name, tick, flags and relations."""
        return self._m.inspect(*states)

    def export(self) -> dict[str, Any]:
        """The mirror's clock as ``Machine.export`` gives it (the source's, as last pushed)."""
        return self._m.export()

    def __str__(self) -> str:
        return str(self._m)

    def __repr__(self) -> str:
        return f"<RemoteMachine {self._id} {self._m}>"

    # ------------------------------------------------------------------ checks (the mirror's)

    def is_active(self, *states: str) -> bool:
        """True when all of ``states`` are active (an unknown state is inactive)."""
        return self._m.is_active(*states)

    def any_active(self, *states: str) -> bool:
        """True when at least one of ``states`` is active."""
        return self._m.any_active(*states)

    def not_active(self, *states: str) -> bool:
        """True when none of ``states`` is active. Raises StateError for unknown states."""
        return self._m.not_active(*states)

    def has(self, *states: str) -> bool:
        """True when all of ``states`` are in the schema."""
        return self._m.has(*states)

    def is_err(self) -> bool:
        """True while Exception is active."""
        return self._m.is_err()

    def is_time(self, time: Iterable[int], states: Iterable[str] | None = None) -> bool:
        """True when the ticks of ``states`` equal ``time``."""
        return self._m.is_time(time, states)

    def was_time(self, time: Iterable[int], states: Iterable[str] | None = None) -> bool:
        """True when each tick of ``states`` is >= the matching value of ``time``."""
        return self._m.was_time(time, states)

    def is_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every state's tick equals ``clock[state]``."""
        return self._m.is_clock(clock)

    def was_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every state's tick is >= ``clock[state]``."""
        return self._m.was_clock(clock)

    def will_be(self, *states: str) -> NoReturn:
        """Not on a mirror: the source's queue is not mirrored."""
        raise MirrorLimitError(f"will_be() reads the queue of {self._id}, which lives in its source's process; "
                               "use can_add() for a dry run on the source, or when(...) to wait for the states")

    # ------------------------------------------------------------------ mutations over the wire

    def _remote(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        called = mirror.check_called(self._m, states)
        a = mirror.check_args(args)
        if self._m.disposed:
            self._client._raise_if_closed()  # a closed client's mirror says so; a mirror closed alone: Canceled
            return Result.CANCELED
        # the common case in one function (plaincall.py): the socket free, nothing queued, no trace context
        res = None if tracecontext.inject is not None else round_trip(self, kind, called, a, _MUT_TYPES[kind])
        if res is None:
            body: dict[str, Any] = {"s": list(called)}
            if a is not None:
                body["a"] = a
            if tracecontext.inject is not None:     # the caller's span becomes the remote transition's parent
                tc = tracecontext.inject()
                if tc:
                    body["tc"] = tc
            # the reply's diff is this mutation's (summed with what the source did before replying, e.g. auto
            # states): its record goes with it, so handlers and on_update callbacks get its states and args
            res = self._client._call(kind, self._id, body,
                                     on_reply=self._mut_reply_handler(_MUT_TYPES[kind], called, a))
        if res[1] is None:
            # the server has no subscription of ours (it restarted or forgot our session): this mirror subscribes
            # again before returning, the client's other mirrors right after
            self._client._call(P.SUB, self._id, {"muts": self._muts}, on_reply=self._on_resub)
            if self._client.connected:
                self._client._session_lost("has no subscription of ours")
        return _result(res[0])

    def _mut_reply_handler(self, kind: str, called: Iterable[str],
                           args: Mapping[str, Any] | None) -> Callable[[Any], None]:
        """What applies the reply to mutation ``kind`` (add, remove, set) of
        ``called`` with ``args`` to this mirror, with that mutation's record."""
        rec = [kind, list(called), dict(args or {})]
        return lambda reply: self._on_mut_reply(reply, rec)

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
        mirror.check_called(self._m, states)
        if states and self.is_active(*states):
            return self.remove(*states, args=args)
        return self.add(*states, args=args)

    def add_ns(self, *states: str, args: Mapping[str, Any] | None = None) -> None:
        """Add without waiting for a reply (pipelining); call ``sync()`` after a batch to see the result."""
        called = mirror.check_called(self._m, states)
        a = mirror.check_args(args)
        body: dict[str, Any] = {"s": list(called)}
        if a is not None:
            body["a"] = a
        self._client._notify(P.ADD_NS, self._id, body, block=True)

    def sync(self) -> None:
        """Fetch the full clock; returns once the mirror has it (after every earlier request was handled)."""
        self._client._call(P.SYNC, self._id, {}, on_reply=self._on_sync)

    def add_err(self, err: BaseException | None, args: Mapping[str, Any] | None = None) -> int:
        """Add Exception on the server with ``err`` (see ``add_err_state``)."""
        return self.add_err_state(EXCEPTION, err, args)

    def add_err_state(self, state: str, err: BaseException | None,
                      args: Mapping[str, Any] | None = None) -> int:
        """Add ``state`` and Exception on the server; the error travels as its class name and message."""
        mirror.check_called(self._m, (state,))
        a = mirror.check_args(args)
        if self._m.disposed:
            self._client._raise_if_closed()
        if err is None or self._m.disposed:
            return Result.CANCELED
        if not isinstance(err, BaseException):
            raise TypeError(f"err must be an exception, got {type(err).__name__}")
        mirror.set_err(self._m, err)
        body: dict[str, Any] = {"state": state, "type": type(err).__name__, "msg": str(err)}
        if a is not None:
            body["a"] = P.sanitize(a)
        res = self._client._call(P.ADD_ERR, self._id, body, on_reply=self._err_reply_handler(state, a, err))
        return _result(res[0])

    def _err_reply_handler(self, state: str, args: Mapping[str, Any] | None,
                           err: BaseException) -> Callable[[Any], None]:
        """What applies an ``add_err_state`` reply to this mirror, with the record the source makes of it: the
        states with Exception, the args with the error (here the caller's own)."""
        called = [state] if state == EXCEPTION or not self._m.has(EXCEPTION) else [state, EXCEPTION]
        rec = ["add", called, {**(args or {}), "err": err}]
        return lambda reply: self._on_mut_reply(reply, rec)

    def can_add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``add`` on the server."""
        return self._can(P.ADD, states, args)

    def can_remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Dry run of ``remove`` on the server."""
        return self._can(P.REMOVE, states, args)

    def _can(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        called = mirror.check_called(self._m, states)
        a = mirror.check_args(args)
        body: dict[str, Any] = {"type": kind, "s": list(called)}
        if a is not None:
            body["a"] = a
        return _result(self._client._call(P.CAN, self._id, body))

    def eval(self, fn: Callable[[], Any], timeout: float = 1.0) -> NoReturn:
        """Not on a mirror: ``fn`` is a local function and the transitions run in the source's process."""
        raise MirrorLimitError(f"eval() runs a function serialised with the transitions of {self._id}, which "
                               "run in its source's process; call eval() there (e.g. behind a state that a "
                               "handler on the source serves), or mutate with add/remove/set")

    def set_schema(self, schema: Mapping[str, State | Mapping[str, Any]]) -> NoReturn:
        """Not possible on a mirror: its schema follows the source's."""
        raise SchemaError(f"schema error: {self._id} is a remote machine; change the schema on its source")

    def import_data(self, data: Mapping[str, Any]) -> NoReturn:
        """Not on a mirror: its clock follows the source's."""
        raise MirrorLimitError(f"import_data() on the mirror of {self._id}: import on the source")

    @classmethod
    def from_export(cls, data: Mapping[str, Any], schema: Mapping[str, State | Mapping[str, Any]],
                    **kwargs: Any) -> NoReturn:
        """Not for mirrors: get one with ``client.machine(id)``; ``Machine.from_export`` builds a local one."""
        raise MirrorLimitError("a mirror comes from client.machine(id); Machine.from_export builds a local machine")

    def keep_history(self, size: int = 1000) -> NoReturn:
        """Not on a mirror: the source keeps the history (``expose(..., history=N)``); read it with ``history``."""
        raise MirrorLimitError(f"the history of {self._id} is kept by its source (expose(..., history=N)); "
                               "read it with .history, .errors() or on_history(fn)")

    # ------------------------------------------------------------------ waiting (the mirror's, when_args the server's)

    def when(self, *states: str, ctx: Ctx | None = None) -> Waiter:
        """Resolves when all of ``states`` are active together (at once if they are)."""
        return self._m.when(*states, ctx=ctx)

    def when_not(self, *states: str, ctx: Ctx | None = None) -> Waiter:
        """Resolves when all of ``states`` are inactive (at once if they are)."""
        return self._m.when_not(*states, ctx=ctx)

    def when_err(self, ctx: Ctx | None = None) -> Waiter:
        """Resolves when Exception is active."""
        return self._m.when_err(ctx=ctx)

    def when_time(self, states: Iterable[str], times: Iterable[int], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``tick(states[i]) >= times[i]`` for every i."""
        return self._m.when_time(states, times, ctx)

    def when_ticks(self, state: str, n: int, ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` ticked ``n`` more times."""
        return self._m.when_ticks(state, n, ctx)

    def when_query(self, fn: Callable[[dict[str, int]], bool], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``fn(clock)`` returns True after a clock change of the mirror."""
        return self._m.when_query(fn, ctx)

    def when_queue(self, tick: int) -> Waiter:
        """Resolves once the source dequeued the mutation with queue tick ``tick`` (as pushed)."""
        return self._m.when_queue(tick)

    def when_disposed(self) -> Waiter:
        """Resolves when the mirror is closed or its source disposed."""
        return self._m.when_disposed()

    def state_ctx(self, state: str) -> Ctx:
        """A context that ends at the state's next tick change on the mirror."""
        return self._m.state_ctx(state)

    def when_args(self, state: str, args: Mapping[str, Any], ctx: Ctx | None = None) -> Waiter:
        """Resolves when ``state`` is entered on the server by a mutation whose args include ``args``."""
        w, body = self._args_begin(state, args, ctx)
        if body is None:
            return w
        try:
            self._client._call(P.WHEN_ARGS, self._id, body)
        except BaseException:
            self._args_reg.pop(body["token"], None)
            raise
        return self._args_end(w, ctx)

    def _args_begin(self, state: str, args: Mapping[str, Any],
                    ctx: Ctx | None = None) -> tuple[Waiter, dict[str, Any] | None]:
        """A ``when_args`` waiter registered under a new token, and the body that registers it on the server
        (None: the waiter is cancelled already, nothing to send). Sync and asyncio mirrors send it their way,
        forget the token if that fails, then ``_args_end``."""
        mirror.check_states(self._m, (state,))
        want = dict(args)
        if self._m.disposed or (ctx is not None and ctx.done):
            w = Waiter()
            w.cancel()
            return w, None
        token = next(self._tokens)

        def forget(_: Waiter) -> None:
            # best effort and never waiting for the socket: a cancel may come from an event loop's thread
            if self._args_reg.pop(token, None) is not None and not self._m.disposed:
                from .acalls import post  # here, not at the top: acalls imports asyncio, slow for a one-shot CLI

                post(self._client, P.WHEN_ARGS_CANCEL, self._id, {"token": token})

        w = mirror.pending_waiter(forget, None)
        self._args_reg[token] = (state, want, w)
        return w, {"state": state, "args": want, "token": token}

    def _args_end(self, w: Waiter, ctx: Ctx | None) -> Waiter:
        mirror.cancel_with(w, ctx)
        return w

    # ------------------------------------------------------------------ handlers and tracers (replayed pushes)

    def bind_handlers(self, obj: object) -> None:
        """Run ``obj``'s final handlers (``<S>State``, ``<S>End``, ``AnyState``) for each transition the source
        pushes, in order, with that transition's clock and args, on the thread that read the push (they must not
        block). Negotiation handlers (Enter, Exit, self, pair, AnyEnter) can only run on the source: an object
        with any raises ``MirrorLimitError``. A handler that raises is logged; the mirror goes on."""
        neg = mirror.negotiation_handlers(self._m, obj)
        if neg:
            raise MirrorLimitError(f"{', '.join(neg)}: negotiation handlers can cancel a transition, which only "
                                   f"the source of {self._id} runs; bind them on the source, and only final "
                                   "handlers (State, End, AnyState) on a mirror")
        self._want_muts(lambda: self._m.bind_handlers(obj))

    def detach_handlers(self, obj: object) -> None:
        """Unbind a previously bound object. Raises ValueError if it is not bound."""
        self._m.detach_handlers(obj)

    def bind_tracer(self, tracer: Tracer) -> None:
        """Add a tracer: it gets each transition the source pushes (``transition_init`` to ``transition_end``,
        ``handler_*`` of the mirror's handlers), ``schema_change`` and ``machine_dispose``; never
        ``mutation_queued`` nor ``queue_end`` (a mirror has no queue)."""
        self._want_muts(lambda: self._m.bind_tracer(tracer))

    def detach_tracer(self, tracer: Tracer) -> None:
        """Remove a tracer. Raises ValueError if it is not bound."""
        self._m.detach_tracer(tracer)

    # ------------------------------------------------------------------ lifecycle

    def on_dispose(self, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` when the mirror is closed or its source disposed (at once if it is)."""
        self._m.on_dispose(fn)

    def close(self) -> None:
        """End the subscription and dispose the mirror (the source is untouched)."""
        if self._m.disposed:
            return
        try:
            if self._client.connected:
                self._client._notify(P.UNSUB, self._id, {})
        except TransportError:
            pass
        self._forget()

    def _forget(self) -> None:
        """Leave the client's mirrors and dispose locally (``close`` after the ``unsub``)."""
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
        mirror.close(self._m)


def served_clock(m: Machine | RemoteMachine) -> list[int]:
    """The ticks of a machine an endpoint serves, not copied (a replica's: its mirror's)."""
    return mirror.clock_view(m._m if isinstance(m, RemoteMachine) else m)


def served_busy(m: Machine | RemoteMachine) -> bool:
    """True while a served machine runs a transition (a replica runs none: its source does)."""
    return not isinstance(m, RemoteMachine) and mirror.is_busy(m)


if TYPE_CHECKING:
    from machine.api import MachineApi

    def _mirror_is_a_machine_api(m: RemoteMachine) -> MachineApi:
        return m  # mypy --strict proves that RemoteMachine satisfies the protocol
