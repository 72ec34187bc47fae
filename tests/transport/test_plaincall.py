"""A plain remote mutation's round trip in one function (transport/plaincall.py), and each way it hands the call to
the general engine: every guarantee kept either way (exactly once, order with add_ns batches, timeouts, errors,
the mirror's clocks in order, waiters and handlers). Real daemons and sockets."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from tr_util import until

from machine import Event, Machine, Result, State, StateError
from transport import TransportError, connect, expose
from transport import protocol as P
from transport.zmqio import EVENTS, POLLIN

SCHEMA = {"Exception": State(multi=True), "Multi": State(multi=True), "Foo": State(), "Bar": State()}


def test_a_plain_add_is_one_round_trip_with_the_mirror_and_its_waiters_current_on_return(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        w = rm.when_ticks("Multi", 5)
        for _ in range(3):
            assert rm.add("Multi") == Result.EXECUTED
        assert w.done  # resolved by the reply itself, before add returned
        assert rm.tick("Multi") == 5 and rm.time() == list(map(int, d.cmd("time worker0").split()[1:]))
        assert not c._inflight and not c._pending  # the engine's records were never touched: the fast path
        assert rm.remove("Multi") == Result.EXECUTED and rm.set("Foo") == Result.EXECUTED
        assert rm.active_states() == ["Foo"]


def test_a_push_read_before_the_reply_is_applied_first_and_the_engine_finishes_the_call(daemon) -> None:
    """The first message read is not this call's reply: the call goes on in the engine, sent already (not twice),
    and the mirror sees the push's clock, then the reply's."""
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        seen: list[list[int]] = []
        rm.on_update(lambda u: seen.append(u["time"]))
        with c._io:  # the I/O thread can't read the push: it waits on the socket for our call
            assert d.cmd("add worker0 Bar") == f"OK {int(Result.EXECUTED)}"
            assert until(lambda: bool(c._sock.getsockopt(EVENTS) & POLLIN))
            assert rm.add("Multi") == Result.EXECUTED  # this thread holds _io: the fast path takes it (re-entrant)
            assert [x.kind for x in c._inflight] == [P.ADD]  # handed to the engine, sent once
        assert rm.tick("Bar") == 1 and rm.tick("Multi") == 1
        assert d.cmd("time worker0") == "TIME " + " ".join(map(str, rm.time()))
        # the push, then the reply: clocks only ever go forward
        assert [t[rm.index("Bar")] for t in seen] == [1, 1] and [t[rm.index("Multi")] for t in seen] == [0, 1]


def test_a_reply_slower_than_the_first_wait_is_resent_and_applied_once(daemon) -> None:
    """No reply within the fast path's first wait: the engine resends after a second (same seq) and the server
    applies it once."""
    d = daemon("--hub", "--slow-foo", "1.5")
    with connect(d.addrs[0], timeout=5) as c:
        rm = c.machine("worker0")
        assert rm.add("Foo") == Result.EXECUTED
        assert rm.tick("Foo") == 1
        assert d.cmd("time worker0").split()[1 + rm.index("Foo")] == "1"


def test_a_reply_slower_than_the_timeout_raises_timeout_in_time(daemon) -> None:
    d = daemon("--hub", "--slow-foo", "2")
    with connect(d.addrs[0], timeout=0.5) as c:
        rm = c.machine("worker0")
        t = time.monotonic()
        with pytest.raises(TransportError) as exc:
            rm.add("Foo")
        assert exc.value.code == "timeout"
        assert time.monotonic() - t < 1.5


def test_errors_map_to_the_same_exceptions() -> None:
    m = Machine(SCHEMA, id="m")
    ep = expose(m)
    try:
        with connect(ep.address) as c:
            rm = c.machine("m")
            with pytest.raises(StateError):
                rm.add("Nope")  # checked locally, nothing sent
            with pytest.raises(TypeError):
                rm.add("Multi", args={"x": object()})  # not msgpack-serializable: raised before a send
            assert c._next_seq == 3  # hello and sub only
            m.dispose()
            with pytest.raises(TransportError) as exc:
                rm.add("Multi")  # the server's error reply, read by the fast path
            assert exc.value.code == P.UNKNOWN_MACHINE
    finally:
        ep.stop()


def test_an_add_after_add_ns_batches_never_overtakes_them(daemon) -> None:
    """add_ns in a burst wait in a batch: a plain add goes the engine's way, which sends the batch first."""
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        for i in range(200):
            rm.add_ns("Multi")
            rm.add_ns("Foo")
            assert rm.remove("Foo") == Result.EXECUTED, i  # after the add_ns: Foo was active
        assert not rm.is_active("Foo") and rm.tick("Multi") == 399
        assert d.cmd("time worker0") == "TIME " + " ".join(map(str, rm.time()))


def test_threads_sharing_a_client_tick_exactly(daemon) -> None:
    """Calls made while another thread holds the socket go the engine's way; each is applied once."""
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        errors: list[BaseException] = []

        def run() -> None:
            try:
                for _ in range(300):
                    rm.add("Multi")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and not any(t.is_alive() for t in threads)
        assert rm.tick("Multi") == 2 * 1200 - 1  # active from the first add: +1, then +2 each
        assert d.cmd("time worker0").split()[1 + rm.index("Multi")] == str(2 * 1200 - 1)


def test_handlers_and_callbacks_get_the_mutation_s_record() -> None:
    m = Machine(SCHEMA, id="m")
    ep = expose(m)
    try:
        with connect(ep.address) as c:
            rm = c.machine("m")
            got: list[Any] = []

            class H:
                def MultiState(self, e: Event) -> None:
                    got.append(dict(e.args))

            rm.bind_handlers(H())
            updates: list[Any] = []
            rm.on_update(lambda u: updates.append(u["mutations"]))
            assert rm.add("Multi", args={"x": 1}) == Result.EXECUTED
            assert got == [{"x": 1}]
            assert updates[-1] == [{"type": "add", "called": ["Multi"], "args": {"x": 1}}]
    finally:
        ep.stop()
