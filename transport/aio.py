"""asyncio face of the transport: ``connect_async(addr)`` -> ``AsyncClient``; ``await client.machine(id)`` ->
``AsyncRemoteMachine``, whose network calls are awaitable and whose reads and waiters are the mirror's own.

Same results and errors as the sync ``Client`` (it is one underneath, sharing its socket, seqs and mirrors).
A call alone in flight is packed and sent on the loop's thread without waiting for the socket; a mutation in a
burst costs the loop only its future and one append, the client I/O thread makes, packs and sends it. Its
reply is read by that thread, which updates the mirror and completes the awaited future (``acalls.py``): no
thread is blocked per call. Cancelling an await gives up a request not
sent yet; one already sent completes (applied once, the mirror updated, its resends answered from the server's
reply cache), so nothing is half applied. Every member that may touch the network is a coroutine
(``queue_len()`` too, a property on the sync mirror; ``history`` reads, ``stop = await m.on_history(fn)``);
``bind_handlers``, ``bind_tracer`` and ``on_update`` need a mirror opened with ``mutations=True`` (else their
first call would subscribe with a round trip, so they raise ``MirrorLimitError`` saying so). Nothing runs on
the loop's default executor (``aclose`` only when another thread holds the socket for 2 s).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from machine import Ctx, Result, Tracer, Waiter, mirror

from . import protocol as P
from . import tracecontext
from .acalls import abandon, acall, acall_many, anotify, post, queue, start
from .calls import _Call
from .client import Client, _listed, many_results
from .errors import MirrorLimitError, TransportError
from .fleet_calls import WatchFn, group_calls, group_results, many_ops
from .history_client import Record, records_body
from .remote import _MUT_TYPES, RemoteMachine, _result

EXCEPTION = "Exception"


class AsyncClient:
    """An asyncio client of one endpoint. Use ``async with connect_async(addr) as client``; safe to share between
    tasks of one loop (and with threads, as the sync ``Client`` is). ``state`` is the connection's machine."""

    def __init__(self, client: Client) -> None:
        self.sync_client = client

    @property
    def connected(self) -> bool:
        """True while the server answers."""
        return self.sync_client.connected

    @property
    def state(self) -> Any:
        """The connection as a state machine (see ``Client.state``): ``await client.state.when("Ready")``."""
        return self.sync_client.state

    @property
    def address(self) -> str:
        return self.sync_client.address

    @property
    def listing(self) -> list[dict[str, Any]] | None:
        """The machines listed with the hello (``connect_async(..., listing=True)``), else None."""
        return self.sync_client.listing

    async def machines(self) -> list[dict[str, Any]]:
        """The machines behind the address (see ``Client.machines``)."""
        return _listed(await acall(self.sync_client, P.MACHS, None, {"c": True}))

    async def info(self) -> dict[str, Any]:
        """The endpoint's figures (see ``Client.info``)."""
        out = await acall(self.sync_client, P.INFO, None, {})
        if not isinstance(out, dict):
            raise TransportError("malformed info reply", code=P.INTERNAL)
        return out

    async def machine(self, mach_id: str, *, mutations: bool = False) -> AsyncRemoteMachine:
        """A mirror of ``mach_id`` (``TransportError`` for an unknown id); one mirror per id, shared with the sync
        client."""
        c = self.sync_client
        rm = c._open_mirror(mach_id, mutations)
        if rm is None:
            info = await acall(c, P.SUB, mach_id, {"muts": mutations})
            rm = c._adopt(mach_id, info, mutations)
        rm._use_loop(asyncio.get_running_loop())  # its async final handlers run on this loop
        return AsyncRemoteMachine(rm, self)

    async def mutate_many(self, ops: list[tuple[str, str, tuple[str, ...] | list[str], dict[str, Any] | None]], *,
                          timeout: float | None = None) -> list[int | BaseException]:
        """Pipelined mutations of several machines (see ``Client.mutate_many``): each result, or the exception
        it raised, in order; ``TransportError`` when the replies don't come in time."""
        c = self.sync_client
        calls = c._many_calls(ops)
        if calls:
            await acall_many(c, calls, timeout)
        timed_out = next((x.error for x in calls if isinstance(x.error, TransportError)
                          and x.error.code == "timeout"), None)
        if timed_out is not None:
            raise timed_out
        return many_results(calls)

    async def mutate_group(self, kind: str, states: tuple[str, ...] | list[str], ids: list[str],
                           args: dict[str, Any] | None = None, *,
                           timeout: float | None = None) -> list[int | BaseException]:
        """One mutation of many machines in one request (see ``Client.mutate_group``): each machine's result, or
        its exception, in the order of ``ids``."""
        c = self.sync_client
        if not ids:
            return []
        if not c._no_group:
            calls = group_calls(c, kind, states, ids, args)
            await acall_many(c, calls, timeout)
            out = group_results(ids, calls)
            if out is not None:
                return out
            c._no_group = True
        return await self.mutate_many(many_ops(kind, states, ids, args), timeout=timeout)

    async def watch_machines(self, fn: WatchFn, ids: list[str] | None = None, *,
                             args: bool = True) -> Callable[[], None]:
        """The transitions of every machine of the endpoint (or of ``ids``) as records, without mirrors (see
        ``Client.watch_machines``); ``fn`` runs on the client I/O thread, as ``Client.on_payload``'s callbacks
        do: hand the records to the loop with ``loop.call_soon_threadsafe``. Returns the stop function."""
        c = self.sync_client
        key, body = c._watch_add(fn, ids, args)
        try:
            await acall(c, P.WATCH, None, body)
        except TransportError as exc:
            raise c._watch_failed(key, exc) from None
        return lambda: c._unwatch(key)

    async def aclose(self) -> None:
        """Close the client (bye, socket, mirrors); its calls still waiting fail with ``closed``."""
        c = self.sync_client
        if c._closed:
            return
        # close() says bye and closes the socket holding it: take it here without waiting (its holder, the I/O
        # thread or a sync caller, gives it back within its turn), so that close() finds it free
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while not c._io.acquire(False):
            if loop.time() >= deadline:  # another thread kept it for 2 s (a long sync call): wait on a thread
                await loop.run_in_executor(None, c.close)
                return
            await asyncio.sleep(0.001)
        try:
            c.close()  # the lock is re-entrant: close() takes it again at once
        finally:
            c._io.release()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _called(rm: RemoteMachine, states: tuple[str, ...]) -> tuple[str, ...]:
    """The called states without repeats, checked as the sync mirror checks them (the same errors)."""
    return mirror.check_called(rm._m, states)


def _args(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return mirror.check_args(args)


_DISPOSED = [int(Result.CANCELED), True]  # a disposed mirror's mutation: Canceled, nothing sent


def _request(rm: RemoteMachine, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None,
             tc: Any) -> Any:
    """A mutation's request ``(body, on_reply)``, checked as the sync mirror checks it (the same errors), or
    ``_DISPOSED``; on the loop's thread for a call alone in flight, on the I/O thread for one in a burst."""
    m = rm._m
    called = mirror.check_called(m, states)
    a = mirror.check_args(args) if args is not None else None
    if m.disposed:  # closed alone, as a disposed machine: Canceled; with its client: TransportError
        rm._client._raise_if_closed()
        return _DISPOSED
    body: dict[str, Any] = {"s": list(called)}
    if a is not None:
        body["a"] = a
    if tc:
        body["tc"] = tc
    return body, rm._mut_reply_handler(_MUT_TYPES[kind], called, a)


class AsyncRemoteMachine:
    """A ``RemoteMachine`` for asyncio: its network calls are coroutines; everything else (checks, clocks,
    getters, ``when*`` waiters, which are awaitable, ``state_ctx``, ``on_update``, ``history``) is the mirror's own
    and never touches the network. ``mirror`` is the sync ``RemoteMachine``."""

    def __init__(self, mirror: RemoteMachine, client: AsyncClient) -> None:
        self.mirror = mirror
        self.client = client

    def _start(self, kind: str, states: tuple[str, ...],
               args: Mapping[str, Any] | None) -> tuple[_Call | list[Any], asyncio.Future[Any]]:
        """A mutation's call and the future its reply completes. Alone in flight it is checked, made and sent
        here (a bad name or value raises here, as in the sync mirror). In a burst (others in flight) this runs
        up to 1000 times in one loop turn, so here is only the future and one append: the checks, body, record
        and packing are the I/O thread's (``acalls.queue``, ``intake``), and a bad name or value fails the
        await with the same error, nothing sent; see docs/benchmarks.md "aio"."""
        rm = self.mirror
        c = rm._client
        loop = asyncio.get_running_loop()
        tc = tracecontext.inject() if tracecontext.inject is not None else None  # the caller's context: here
        if c._acalls or c._intake:
            return queue(c, loop, kind, rm._id, (_request, rm, kind, states, args, tc))
        made = _request(rm, kind, states, args, tc)
        if type(made) is not tuple:  # a disposed mirror: nothing sent
            fut = loop.create_future()
            fut.set_result(made)
            return _Call(0, kind, rm._id, None, b"", None), fut
        return start(c, loop, kind, rm._id, made[0], made[1])

    async def _after(self, res: list[Any]) -> int:
        """A mutation's reply that says the server lost our subscription: subscribe again first, as the sync
        mirror does."""
        rm = self.mirror
        c = rm._client
        await acall(c, P.SUB, rm.id, {"muts": rm._muts}, on_reply=rm._on_resub)
        if c.connected:
            c._session_lost("has no subscription of ours")
        return _result(res[0])

    # add, remove and set return _mutation's coroutine itself (not async defs awaiting it: no nested coroutine on
    # the start path of a burst), so ``await m.add(...)`` and ``gather(...)`` work as with any coroutine
    def add(self, *states: str, args: Mapping[str, Any] | None = None) -> Coroutine[Any, Any, int]:
        """Add on the server; returns its result with the mirror updated (see ``RemoteMachine.add``)."""
        return self._mutation(P.ADD, states, args)

    def remove(self, *states: str, args: Mapping[str, Any] | None = None) -> Coroutine[Any, Any, int]:
        """Remove on the server (see ``add``)."""
        return self._mutation(P.REMOVE, states, args)

    def set(self, *states: str, args: Mapping[str, Any] | None = None) -> Coroutine[Any, Any, int]:
        """Set on the server (see ``add``)."""
        return self._mutation(P.SET, states, args)

    async def _mutation(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        call, fut = self._start(kind, states, args)
        try:
            res = await fut
        except asyncio.CancelledError:
            abandon(self.mirror._client, call)
            raise
        return _result(res[0]) if res[1] is not None else await self._after(res)

    async def toggle(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Remove when all of ``states`` are active on the mirror, else add."""
        _called(self.mirror, states)
        if states and self.mirror.is_active(*states):
            return await self.remove(*states, args=args)
        return await self.add(*states, args=args)

    async def add_err(self, err: BaseException | None, args: Mapping[str, Any] | None = None) -> int:
        return await self.add_err_state(EXCEPTION, err, args)

    async def add_err_state(self, state: str, err: BaseException | None,
                            args: Mapping[str, Any] | None = None) -> int:
        """Add ``state`` and Exception on the server; the error travels as its class name and message."""
        rm = self.mirror
        _called(rm, (state,))
        a = _args(args)
        if rm.disposed:
            rm.client._raise_if_closed()
        if err is None or rm.disposed:
            return Result.CANCELED
        if not isinstance(err, BaseException):
            raise TypeError(f"err must be an exception, got {type(err).__name__}")
        mirror.set_err(rm._m, err)  # the mirror's err, as the sync add_err_state records it
        body: dict[str, Any] = {"state": state, "type": type(err).__name__, "msg": str(err)}
        if a is not None:
            body["a"] = P.sanitize(a)
        res = await acall(rm.client, P.ADD_ERR, rm.id, body, on_reply=rm._err_reply_handler(state, a, err))
        return _result(res[0])

    async def _can(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        called = _called(self.mirror, states)
        a = _args(args)
        body: dict[str, Any] = {"type": kind, "s": list(called)}
        if a is not None:
            body["a"] = a
        return _result(await acall(self.mirror.client, P.CAN, self.mirror.id, body))

    async def can_add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self._can(P.ADD, states, args)

    async def can_remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self._can(P.REMOVE, states, args)

    async def sync(self) -> None:
        """Fetch the full clock; returns once the mirror has it (after every earlier request was handled)."""
        await acall(self.mirror.client, P.SYNC, self.mirror.id, {}, on_reply=self.mirror._on_sync)

    async def info(self) -> dict[str, Any]:
        return dict(await acall(self.mirror.client, P.INFO, self.mirror.id, {}))

    async def errors(self, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.history.errors(limit)

    async def add_ns(self, *states: str, args: Mapping[str, Any] | None = None) -> None:
        """Add without waiting for a reply (pipelining): returns once sent; ``sync()`` after a batch shows the
        result. ``TransportError`` (``limit``) when the server's queue for this client stays full."""
        rm = self.mirror
        called = _called(rm, states)
        a = _args(args)
        body: dict[str, Any] = {"s": list(called)}
        if a is not None:
            body["a"] = a
        await anotify(rm.client, P.ADD_NS, rm.id, body)

    async def when_args(self, state: str, args: Mapping[str, Any], ctx: Ctx | None = None) -> Waiter:
        """Registers on the server (one awaited round trip); await the returned waiter for the match."""
        rm = self.mirror
        w, body = rm._args_begin(state, args, ctx)  # the sync mirror's tokens and waiter
        if body is None:
            return w
        try:
            await acall(rm.client, P.WHEN_ARGS, rm.id, body)
        except BaseException:
            rm._args_reg.pop(body["token"], None)
            raise
        return rm._args_end(w, ctx)

    async def queue_len(self) -> int:
        """Mutations waiting in the source's queue: one round trip (a method here, where the sync mirror has a
        property: on this class no attribute read touches the network)."""
        return int((await self.info())["queue_len"])

    def _muts_on(self, name: str) -> None:
        if not self.mirror._muts:
            raise MirrorLimitError(
                f"{name}() on the mirror of {self.mirror.id}, opened without mutations=True, would block the event "
                f"loop on a round trip (it subscribes to the source's mutation records first): open it with "
                f"`await client.machine({self.mirror.id!r}, mutations=True)`, then call {name}()")

    def bind_handlers(self, obj: object) -> None:
        """``RemoteMachine.bind_handlers`` on a mirror opened with ``mutations=True`` (no network then; else
        ``MirrorLimitError`` saying so)."""
        self._muts_on("bind_handlers")
        self.mirror.bind_handlers(obj)

    def bind_tracer(self, tracer: Tracer) -> None:
        """``RemoteMachine.bind_tracer`` on a mirror opened with ``mutations=True`` (see ``bind_handlers``)."""
        self._muts_on("bind_tracer")
        self.mirror.bind_tracer(tracer)

    def on_update(self, fn: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
        """``RemoteMachine.on_update`` on a mirror opened with ``mutations=True`` (see ``bind_handlers``)."""
        self._muts_on("on_update")
        return self.mirror.on_update(fn)

    async def close(self) -> None:
        """End the subscription and dispose the mirror (the source is untouched); waits for nothing."""
        rm = self.mirror
        if rm.disposed:
            return
        if rm.client.connected:
            post(rm.client, P.UNSUB, rm.id, {})  # best effort, as the sync close's
        rm._forget()

    async def dispose(self, timeout: float = 1.0) -> None:
        """Same as ``close()``."""
        await self.close()

    @property
    def history(self) -> AsyncHistory:
        """The source's history, read over the wire: ``await m.history.records(...)`` (or ``await
        m.history(...)``), ``await m.history.errors()``, ``await m.history.last_seq()``."""
        return AsyncHistory(self.mirror)

    async def on_history(self, fn: Callable[[Record], Any], *, backlog: int = 100) -> Callable[[], None]:
        """``RemoteMachine.on_history``, awaited: ``stop = await m.on_history(fn)``; ``fn`` runs on the client's
        I/O thread (it must not block); ``stop()`` never waits."""
        rm = self.mirror
        body = rm._follow_begin(fn, backlog)
        try:
            if body.get("follow"):
                await acall(rm.client, P.HIST, rm.id, body, on_reply=rm._on_hist_backlog)
            else:
                rm._catch_up(fn, await acall(rm.client, P.HIST, rm.id, body))
        except BaseException:
            rm._follow_end(fn)
            raise
        return lambda: rm._unfollow(fn, functools.partial(post, rm.client))

    def __getattr__(self, name: str) -> Any:
        # the mirror's local members: reads, clocks, waiters (awaitable), contexts, callbacks
        return getattr(self.mirror, name)

    def __repr__(self) -> str:
        return f"<AsyncRemoteMachine {self.mirror!r}>"


class AsyncHistory:
    """An asyncio mirror's view of its source's history (``RemoteHistory``'s reads, each one awaited round
    trip)."""

    def __init__(self, mirror: RemoteMachine) -> None:
        self._mirror = mirror
        self.size = 0  # what the last records() reply said

    async def __call__(self, **kw: Any) -> list[Record]:
        """``records(**kw)``."""
        return await self.records(**kw)

    async def records(self, *, since_tick: int | None = None, since_time: float | None = None,
                      since_seq: int | None = None, limit: int | None = 100) -> list[Record]:
        """Records oldest first (see ``RemoteHistory.records``)."""
        rm = self._mirror
        out = await acall(rm.client, P.HIST, rm.id, records_body(since_tick, since_time, since_seq, limit))
        self.size = int(out.get("size", 0))
        return list(out["records"])

    async def errors(self, limit: int | None = None) -> list[Record]:
        """The source's last errors, oldest first."""
        out = await acall(self._mirror.client, P.HIST, self._mirror.id,
                          {"errors": True, "limit": limit or P.MAX_HIST_REPLY})
        return list(out["errors"])

    async def last_seq(self) -> int:
        """The seq of the source's newest record (a property on the sync view)."""
        out = await acall(self._mirror.client, P.HIST, self._mirror.id, {"limit": 0})
        return int(out["last_seq"])


async def _connect(addr: str, timeout: float, server_key: Any, client_keys: Any, name: str | None,
                   listing: bool = False) -> AsyncClient:
    client = Client(addr, timeout=timeout, server_key=server_key, client_keys=client_keys, name=name, _hello=False)
    try:
        if listing:  # the machines listed in the hello's round trip (see Client's listing)
            calls = client._hello_calls()
            await acall_many(client, calls)
            hello = client._hello_listed(calls)
        else:
            hello = await acall(client, P.HELLO, None, client._hello_body())
    except TransportError as exc:
        raise client._not_connected(exc) from None
    except BaseException:
        client.close()
        raise
    client._hello_answered(hello)
    return AsyncClient(client)


class _Connecting:
    """What ``connect_async`` returns: ``await`` it for the client, or ``async with`` it (closed at the end)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: AsyncClient | None = None

    def __await__(self) -> Any:
        return self._make().__await__()

    async def __aenter__(self) -> AsyncClient:
        self._client = await self._make()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()


def connect_async(addr: str, *, timeout: float = 3.0, server_key: Any = None, client_keys: Any = None,
                  name: str | None = None, threads: int | None = None, listing: bool = False) -> _Connecting:
    """Connect without blocking the loop: ``client = await connect_async(addr)`` or ``async with
    connect_async(addr) as client``; ``TransportError`` when nothing answers within ``timeout``. ``threads`` is
    accepted for compatibility and unused (calls take no thread). ``listing``: list the machines with the hello
    (``client.listing``, as for ``connect``)."""
    return _Connecting(lambda: _connect(addr, timeout, server_key, client_keys, name, listing))
