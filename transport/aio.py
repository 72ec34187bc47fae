"""asyncio face of the transport: ``connect_async(addr)`` -> ``AsyncClient``; ``await client.machine(id)`` ->
``AsyncRemoteMachine``, whose network calls are awaitable and whose reads and waiters are the mirror's own.

Same results and errors as the sync ``Client`` (it is one underneath, sharing its socket, seqs and mirrors).
A call is packed and sent on the loop's thread without waiting for the socket, and its reply is read by the
process's client I/O thread, which updates the mirror and completes the awaited future (``acalls.py``): no
thread is blocked per call. Cancelling an await gives up a request not sent yet; one already sent completes
(applied once, the mirror updated, its resends answered from the server's reply cache), so nothing is half
applied. ``when_args``, the mirror's ``close`` and ``aclose`` still run on a worker thread (they may wait for the
socket).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from machine import Result, Waiter, mirror

from . import protocol as P
from . import tracecontext
from .acalls import acall, acall_many, anotify
from .calls import _Call
from .client import Client
from .errors import TransportError
from .remote import _MUT_TYPES, RemoteMachine, _result

T = TypeVar("T")
EXCEPTION = "Exception"
_KINDS = {"add": P.ADD, "remove": P.REMOVE, "set": P.SET}


class AsyncClient:
    """An asyncio client of one endpoint. Use ``async with connect_async(addr) as client``; safe to share between
    tasks of one loop (and with threads, as the sync ``Client`` is). ``state`` is the connection's machine."""

    def __init__(self, client: Client) -> None:
        self.sync_client = client

    async def _thread(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """For the few members that may wait for the socket: on the loop's default executor."""
        if self.sync_client._closed:
            raise TransportError(f"client for {self.sync_client.address} is closed", code="closed")
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kw))

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

    async def machines(self) -> list[dict[str, Any]]:
        """The machines behind the address (see ``Client.machines``)."""
        out = await acall(self.sync_client, P.MACHS, None, {})
        if not isinstance(out, list):
            raise TransportError("malformed machs reply", code=P.INTERNAL)
        return out

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
        calls: list[_Call] = []
        seq = c._next_seq
        for mach_id, kind, states, args in ops:
            if kind not in _KINDS:
                raise ValueError(f"unknown mutation {kind!r} (add, remove or set)")
            body: dict[str, Any] = {"s": list(states)}
            if args:
                body["a"] = dict(args)
            rm = c._open_mirror(mach_id, False)
            calls.append(c._new_call(_KINDS[kind], mach_id, body, rm._on_mut_reply if rm is not None else None,
                                     seq + len(calls)))
        if calls:
            await acall_many(c, calls, timeout)
        timed_out = next((x.error for x in calls if isinstance(x.error, TransportError)
                          and x.error.code == "timeout"), None)
        if timed_out is not None:
            raise timed_out
        return [x.error if x.error is not None else _result(x.result[0]) for x in calls]

    async def aclose(self) -> None:
        """Close the client (bye, socket, mirrors); its calls still waiting fail with ``closed``."""
        if not self.sync_client._closed:
            await asyncio.get_running_loop().run_in_executor(None, self.sync_client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _called(rm: RemoteMachine, states: tuple[str, ...]) -> tuple[str, ...]:
    """The called states without repeats, checked as the sync mirror checks them (the same errors)."""
    return mirror.check_called(rm._m, states)


def _args(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return mirror.check_args(args)


class AsyncRemoteMachine:
    """A ``RemoteMachine`` for asyncio: its network calls are coroutines; everything else (checks, clocks,
    getters, ``when*`` waiters, which are awaitable, ``state_ctx``, ``on_update``, ``history``) is the mirror's own
    and never touches the network. ``mirror`` is the sync ``RemoteMachine``."""

    def __init__(self, mirror: RemoteMachine, client: AsyncClient) -> None:
        self.mirror = mirror
        self.client = client

    async def _mutate(self, kind: str, states: tuple[str, ...], args: Mapping[str, Any] | None) -> int:
        rm = self.mirror
        called = _called(rm, states)
        a = _args(args)
        if rm.disposed:  # closed alone, as a disposed machine: Canceled; with its client: TransportError
            rm.client._raise_if_closed()
            return Result.CANCELED
        body: dict[str, Any] = {"s": list(called)}
        if a is not None:
            body["a"] = a
        if tracecontext.inject is not None:
            tc = tracecontext.inject()
            if tc:
                body["tc"] = tc
        c = rm.client
        res = await acall(c, kind, rm.id, body, on_reply=rm._mut_reply_handler(_MUT_TYPES[kind], called, a))
        if res[1] is None:  # the server lost our subscription: subscribe again first, as the sync mirror does
            await acall(c, P.SUB, rm.id, {"muts": rm._muts}, on_reply=rm._on_resub)
            if c.connected:
                c._session_lost("has no subscription of ours")
        return _result(res[0])

    async def add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        """Add on the server; returns its result with the mirror updated (see ``RemoteMachine.add``)."""
        return await self._mutate(P.ADD, states, args)

    async def remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self._mutate(P.REMOVE, states, args)

    async def set(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self._mutate(P.SET, states, args)

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
        out = await acall(self.mirror.client, P.HIST, self.mirror.id,
                          {"errors": True, "limit": limit or P.MAX_HIST_REPLY})
        return list(out["errors"])

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

    async def when_args(self, state: str, args: Mapping[str, Any], ctx: Any = None) -> Waiter:
        """Registers on the server (one round trip); await the returned waiter for the match."""
        return await self.client._thread(self.mirror.when_args, state, args, ctx)

    async def close(self) -> None:
        await self.client._thread(self.mirror.close)

    def __getattr__(self, name: str) -> Any:
        # the mirror's local members: reads, clocks, waiters (awaitable), contexts, callbacks
        return getattr(self.mirror, name)

    def __repr__(self) -> str:
        return f"<AsyncRemoteMachine {self.mirror!r}>"


async def _connect(addr: str, timeout: float, server_key: Any, client_keys: Any, name: str | None) -> AsyncClient:
    client = Client(addr, timeout=timeout, server_key=server_key, client_keys=client_keys, name=name, _hello=False)
    try:
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
                  name: str | None = None, threads: int | None = None) -> _Connecting:
    """Connect without blocking the loop: ``client = await connect_async(addr)`` or ``async with
    connect_async(addr) as client``; ``TransportError`` when nothing answers within ``timeout``. ``threads`` is
    accepted for compatibility and unused (calls take no thread)."""
    return _Connecting(lambda: _connect(addr, timeout, server_key, client_keys, name))
