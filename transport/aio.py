"""asyncio face of the transport: ``connect_async(addr)`` -> ``AsyncClient``; ``await client.machine(id)`` ->
``AsyncRemoteMachine``, whose network calls are awaitable and whose reads and waiters are the mirror's own.

Same results and errors as the sync ``Client`` (it is one underneath). Each round trip runs on a small pool of
threads of the client's own, so the event loop never waits for the network (the threads still compete with it for
the GIL: see ``scripts/bench aio``); cancelling an await does not cancel the request
already sent (it completes, and a retry is answered from the server's reply cache), so nothing is half applied.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from machine import Waiter

from .client import Client
from .errors import TransportError
from .remote import RemoteMachine

T = TypeVar("T")

class AsyncClient:
    """An asyncio client of one endpoint. Use ``async with connect_async(addr) as client``; safe to share between
    tasks of one loop (and with threads, as the sync ``Client`` is)."""

    def __init__(self, client: Client, pool: ThreadPoolExecutor) -> None:
        self.sync_client = client
        self._pool = pool

    async def _run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        if self.sync_client._closed:
            raise TransportError(f"client for {self.sync_client.address} is closed", code="closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kw))

    @property
    def connected(self) -> bool:
        """True while the server answers."""
        return self.sync_client.connected

    @property
    def address(self) -> str:
        return self.sync_client.address

    async def machines(self) -> list[dict[str, Any]]:
        """The machines behind the address (see ``Client.machines``)."""
        return await self._run(self.sync_client.machines)

    async def info(self) -> dict[str, Any]:
        """The endpoint's figures (see ``Client.info``)."""
        return await self._run(self.sync_client.info)

    async def machine(self, mach_id: str, *, mutations: bool = False) -> AsyncRemoteMachine:
        """A mirror of ``mach_id`` (``TransportError`` for an unknown id)."""
        rm = await self._run(self.sync_client.machine, mach_id, mutations=mutations)
        rm._use_loop(asyncio.get_running_loop())  # its async final handlers run on this loop
        return AsyncRemoteMachine(rm, self)

    async def mutate_many(self, ops: Any, *, timeout: float | None = None) -> list[int | BaseException]:
        """Pipelined mutations (see ``Client.mutate_many``)."""
        return await self._run(self.sync_client.mutate_many, ops, timeout=timeout)

    async def aclose(self) -> None:
        """Close the client (bye, socket, mirrors) and its threads."""
        await self._run(self.sync_client.close)
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncRemoteMachine:
    """A ``RemoteMachine`` for asyncio: the members in ``NETWORK`` are coroutines; everything else (checks,
    clocks, getters, ``when*`` waiters, which are awaitable, ``state_ctx``, ``on_update``, ``history``) is the
    mirror's own and never touches the network. ``mirror`` is the sync ``RemoteMachine``."""

    def __init__(self, mirror: RemoteMachine, client: AsyncClient) -> None:
        self.mirror = mirror
        self.client = client

    async def add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.add, *states, args=args)

    async def remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.remove, *states, args=args)

    async def set(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.set, *states, args=args)

    async def toggle(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.toggle, *states, args=args)

    async def add_err(self, err: BaseException | None, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.add_err, err, args)

    async def add_err_state(self, state: str, err: BaseException | None,
                            args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.add_err_state, state, err, args)

    async def can_add(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.can_add, *states, args=args)

    async def can_remove(self, *states: str, args: Mapping[str, Any] | None = None) -> int:
        return await self.client._run(self.mirror.can_remove, *states, args=args)

    async def add_ns(self, *states: str, args: Mapping[str, Any] | None = None) -> None:
        await self.client._run(self.mirror.add_ns, *states, args=args)

    async def sync(self) -> None:
        await self.client._run(self.mirror.sync)

    async def when_args(self, state: str, args: Mapping[str, Any], ctx: Any = None) -> Waiter:
        """Registers on the server (one round trip); await the returned waiter for the match."""
        return await self.client._run(self.mirror.when_args, state, args, ctx)

    async def errors(self, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.client._run(self.mirror.errors, limit)

    async def info(self) -> dict[str, Any]:
        return await self.client._run(self.mirror.info)

    async def close(self) -> None:
        await self.client._run(self.mirror.close)

    def __getattr__(self, name: str) -> Any:
        # the mirror's local members: reads, clocks, waiters (awaitable), contexts, callbacks
        return getattr(self.mirror, name)

    def __repr__(self) -> str:
        return f"<AsyncRemoteMachine {self.mirror!r}>"


async def _connect(addr: str, timeout: float, server_key: Any, client_keys: Any, name: str | None,
                   threads: int) -> AsyncClient:
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="am-aio")
    loop = asyncio.get_running_loop()
    try:
        client = await loop.run_in_executor(pool, functools.partial(
            Client, addr, timeout=timeout, server_key=server_key, client_keys=client_keys, name=name))
    except BaseException:
        pool.shutdown(wait=False)
        raise
    return AsyncClient(client, pool)


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
                  name: str | None = None, threads: int = 8) -> _Connecting:
    """Connect without blocking the loop: ``client = await connect_async(addr)`` or ``async with
    connect_async(addr) as client``; ``TransportError`` when nothing answers within ``timeout``. ``threads``:
    round trips that may be in flight at once."""
    return _Connecting(lambda: _connect(addr, timeout, server_key, client_keys, name, threads))
