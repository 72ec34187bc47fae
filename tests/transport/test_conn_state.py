"""The client's connection as a state machine (``client.state``), against daemon processes on real sockets:
connected, the daemon killed (the link lost, retrying, a network error), the daemon back (Ready again), a daemon
restarted at once (a lost session, not a network error), close; waited on from threads and from asyncio."""

from __future__ import annotations

import asyncio
from typing import Any

from tr_util import free_port, until

from transport import connect
from transport.conn_state import describe


def test_the_connection_machine_follows_the_link_through_a_daemon_killed_and_back(daemon: Any) -> None:
    addr = f"127.0.0.1:{free_port()}"
    d = daemon("--addr", addr, "--hub")
    c = connect(addr, timeout=1.0)
    status: list[bool] = []
    c.on_status(status.append)
    try:
        st = c.state
        assert st.active_states() == ["Start", "Connected", "Ready"]
        assert describe(c) == "Start Connected Ready"
        rm = c.machine("worker0")
        down = st.when("RetryingConn")
        d.kill()
        assert down.wait(8), describe(c)   # silence past the peer timeout (3.5 s)
        assert st.active_states() == ["Start", "Disconnected", "RetryingConn", "ErrNetwork"]
        assert not c.connected and status == [False]
        up = st.when("Ready")
        d2 = daemon("--addr", addr, "--hub", "--start", "Bar")
        assert up.wait(10), describe(c)
        assert st.active_states() == ["Start", "Connected", "Ready"]   # ErrNetwork cleared, retrying over
        assert status == [False, True] and c.connected
        assert st.tick("Ready") == 3 and st.tick("ErrNetwork") == 2   # once on, once off
        assert until(lambda: rm.is_active("Bar"), timeout=5)            # mirrors were subscribed again
        assert d2.cmd("add worker0 Foo").startswith("OK")
    finally:
        c.close()
    assert c.state.active_states() == ["Disconnected"]
    assert status == [False, True]          # closing is not a lost link: on_status is not called
    assert not c.state.disposed             # still readable, and waitable, after close


def test_a_daemon_restarted_at_once_is_a_lost_session_without_a_network_error(daemon: Any) -> None:
    """Killed and started again on its port before the client's peer timeout: the next pong names another boot,
    so the link is reported lost and back (the mirrors subscribed again), with no ErrNetwork."""
    addr = f"127.0.0.1:{free_port()}"
    d = daemon("--addr", addr, "--hub")
    with connect(addr) as c:
        st = c.state
        entered: list[str] = []

        class Watch:
            def RetryingConnState(self, e: Any) -> None:
                entered.append("RetryingConn")

            def ReadyState(self, e: Any) -> None:
                entered.append("Ready")

        st.bind_handlers(Watch())
        c.machines()                     # the last exchange: the peer timeout counts from here
        d.kill()
        daemon("--addr", addr, "--hub")
        assert until(lambda: entered == ["RetryingConn", "Ready"], timeout=10), entered
        assert st.tick("ErrNetwork") == 0 and st.is_active("Ready")


def test_asyncio_code_awaits_the_connection_states(daemon: Any) -> None:
    addr = f"127.0.0.1:{free_port()}"
    d = daemon("--addr", addr, "--hub")

    async def main() -> None:
        c = connect(addr, timeout=1.0)
        try:
            assert await asyncio.wait_for(c.state.when("Ready"), 5) is True   # already there: done at once
            d.kill()
            assert await asyncio.wait_for(c.state.when("ErrNetwork"), 8) is True
            daemon("--addr", addr, "--hub")
            assert await asyncio.wait_for(c.state.when("Ready"), 10) is True
            closed = c.state.when_not("Start")
        finally:
            c.close()
        assert await asyncio.wait_for(closed, 5) is True

    asyncio.run(main())
