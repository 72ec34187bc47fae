"""A mirror's calls on a failed link raise ``TransportError``, the same way from the sync and the async client
(the documented choice; asyncmachine-go returns Canceled and adds ErrNetwork instead): the daemon process killed,
then the clients closed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from transport import TransportError, connect
from transport.aio import connect_async

CALLS = [("add", ("Foo",)), ("remove", ("Foo",)), ("set", ("Bar",)), ("toggle", ("Foo",)),
         ("can_add", ("Foo",)), ("add_err", (ValueError("x"),))]


def _sync_errors(rm: Any) -> list[tuple[str, str]]:
    out = []
    for name, args in CALLS:
        with pytest.raises(TransportError) as ei:
            getattr(rm, name)(*args)
        out.append((name, ei.value.code))
    return out


async def _async_errors(am: Any) -> list[tuple[str, str]]:
    out = []
    for name, args in CALLS:
        with pytest.raises(TransportError) as ei:
            await getattr(am, name)(*args)
        out.append((name, ei.value.code))
    return out


def test_calls_on_a_failed_link_raise_the_same_error_sync_and_async(daemon: Any) -> None:
    d = daemon("--hub")
    addr = d.addrs[0]

    async def main() -> None:
        c = connect(addr, timeout=0.5)
        ac = await connect_async(addr, timeout=0.5)
        try:
            rm, am = c.machine("worker0"), await ac.machine("worker0")
            d.kill()
            t0 = time.monotonic()
            sync = _sync_errors(rm)
            took = time.monotonic() - t0
            assert sync == [(name, "timeout") for name, _ in CALLS]
            assert took < len(CALLS) * 0.5 + 2          # each within the client's timeout (+ the box's load)
            assert await _async_errors(am) == sync
            assert not rm.is_active("Foo") and not am.is_active("Foo")   # nothing shown that was not applied
        finally:
            c.close()
            await ac.aclose()
        closed = _sync_errors(rm)
        assert closed == [(name, "closed") for name, _ in CALLS]
        assert await _async_errors(am) == closed

    asyncio.run(asyncio.wait_for(main(), 60))
