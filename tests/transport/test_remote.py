"""RemoteMachine against a daemon process: mirrors, round trips, pushes, waiters, errors."""

from __future__ import annotations

import threading
import time

import pytest
from tr_util import free_port, until

from machine import Result, StateError
from transport import RemoteMachine, TransportError, connect

NAMES = ["Exception", "ErrOnClient", "Foo", "Bar", "Baz", "Start", "Ready", "Multi"]


def test_mirror_has_the_schema_and_clock(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        listed = c.machines()
        assert [m["id"] for m in listed] == ["worker0", "worker1", "worker2"]
        assert all(m["parent_id"] == "daemon" and m["states"] == NAMES for m in listed)
        rm = c.machine("worker0")
        assert isinstance(rm, RemoteMachine)
        assert rm.id == "worker0" and rm.parent_id == "daemon"
        assert rm.state_names == NAMES
        assert rm.time() == [0] * len(NAMES)
        assert rm.schema["Ready"].require == ("Start",)
        assert rm.schema["Foo"].remove == ("Bar", "Baz")
        assert c.machine("worker0") is rm


def test_mutation_round_trip_updates_the_mirror_on_return(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        assert rm.add("Foo") == Result.EXECUTED
        assert rm.is_active("Foo") and str(rm) == "(Foo:1)"
        assert d.cmd("time worker0") == "TIME 0 0 1 0 0 0 0 0"
        assert rm.add("Bar", args={"k": "v"}) == Result.EXECUTED
        assert rm.string_all() == "(Bar:1) [Exception:0 ErrOnClient:0 Foo:2 Baz:0 Start:0 Ready:0 Multi:0]"
        assert rm.add("Baz", args={"deny": "1"}) == Result.CANCELED
        assert rm.add("Ready") == Result.CANCELED  # requires Start
        assert rm.set("Start", "Ready") == Result.EXECUTED
        assert rm.active_states() == ["Start", "Ready"]
        assert rm.remove("Start") == Result.EXECUTED
        assert rm.not_active("Start", "Ready")
        assert rm.toggle("Foo") == Result.EXECUTED and rm.is_active("Foo")
        assert rm.toggle("Foo") == Result.EXECUTED and not rm.is_active("Foo")
        assert rm.can_add("Baz", args={"deny": "1"}) == Result.CANCELED
        assert rm.can_add("Baz") == Result.EXECUTED and not rm.is_active("Baz")


def test_unknown_state_raises_locally_and_changes_nothing(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker1")
        before = rm.time()
        with pytest.raises(StateError, match="Nope"):
            rm.add("Foo", "Nope")
        with pytest.raises(StateError):
            rm.when("Nope")
        assert d.cmd("time worker1") == "TIME " + " ".join(map(str, before))


def test_unknown_machine_is_a_lookup_error(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        with pytest.raises(TransportError, match="unknown machine: nope") as info:
            c.machine("nope")
        assert isinstance(info.value, LookupError) and info.value.code == "unknown_machine"


def test_server_side_change_reaches_the_mirror_and_its_waiters(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker2")
        w = rm.when("Bar")
        assert not w.done
        assert d.cmd("add worker2 Bar") == "OK 0"
        assert w.wait(timeout=2)
        assert rm.is_active("Bar")
        gone = rm.when_not("Bar")
        d.cmd("add worker2 Foo")
        assert gone.wait(timeout=2) and rm.is_active("Foo")
        ticks = rm.when_ticks("Multi", 3)
        for _ in range(2):
            d.cmd("add worker2 Multi")
        assert ticks.wait(timeout=2) and rm.tick("Multi") == 3


def test_when_args_is_evaluated_on_the_server(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        w = rm.when_args("Bar", {"k": "v"})
        other = c.machine("worker0")
        assert other.add("Bar", args={"k": "x"}) == Result.EXECUTED
        assert not w.wait(timeout=0.2)
        rm.remove("Bar")
        assert rm.add("Bar", args={"k": "v", "more": 1}) == Result.EXECUTED
        assert w.wait(timeout=2) and not w.cancelled
        w2 = rm.when_args("Foo", {"n": 1})
        w2.cancel()
        assert w2.cancelled


def test_unreachable_server_fails_within_the_timeout() -> None:
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="cannot connect"):
        connect(f"127.0.0.1:{free_port()}", timeout=0.5)
    assert time.monotonic() - t0 < 2


def test_calls_to_a_dead_server_raise_instead_of_hanging(daemon) -> None:
    d = daemon("--hub")
    c = connect(d.addrs[0], timeout=0.5)
    rm = c.machine("worker0")
    d.kill()
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="timeout"):
        rm.add("Foo")
    assert time.monotonic() - t0 < 2
    assert not rm.is_active("Foo")
    assert until(lambda: not c.connected, timeout=6)
    c.close()


def test_ten_clients_see_one_push(daemon) -> None:
    d = daemon("--hub")
    clients = [connect(d.addrs[0]) for _ in range(10)]
    try:
        mirrors = [c.machine("worker1") for c in clients]
        waiters = [m.when("Baz") for m in mirrors]
        assert mirrors[0].add("Baz") == Result.EXECUTED
        assert all(w.wait(timeout=2) for w in waiters)
        assert all(m.tick("Baz") == 1 for m in mirrors)
    finally:
        for c in clients:
            c.close()


def test_threads_adding_a_multi_state_remotely_tick_exactly(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        n_threads, per = 4, 250
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(per):
                    rm.add("Multi")
            except BaseException as exc:  # collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(n_threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        total = n_threads * per
        assert rm.tick("Multi") == 2 * total - 1
        assert d.cmd("time worker0").split()[-1] == str(2 * total - 1)


def test_pipelined_adds_then_sync(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker0")
        for _ in range(500):
            rm.add_ns("Multi")
        rm.sync()
        assert rm.tick("Multi") == 999
        assert d.cmd("time worker0").split()[-1] == "999"


def test_retried_call_is_applied_once(daemon) -> None:
    # FooState sleeps 1.5 s: the client resends after 1 s with the same seq; the server answers from its cache
    d = daemon("--hub", "--slow-foo", "1.5")
    with connect(d.addrs[0], timeout=5) as c:
        rm = c.machine("worker0")
        assert rm.add("Foo") == Result.EXECUTED
        assert rm.tick("Foo") == 1
        assert d.cmd("time worker0").split()[3] == "1"  # TIME, Exception, ErrOnClient, Foo


def test_mirror_is_disposed_by_close_and_the_source_lives(daemon) -> None:
    d = daemon("--hub")
    c = connect(d.addrs[0])
    rm = c.machine("worker0")
    w = rm.when("Foo")
    rm.close()
    assert rm.disposed and w.cancelled
    rm2 = c.machine("worker0")
    assert rm2 is not rm and rm2.add("Foo") == Result.EXECUTED
    c.close()
    assert rm2.disposed
    with connect(d.addrs[0]) as c2:
        assert c2.machine("worker0").is_active("Foo")


def test_on_update_reports_source_mutations(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        rm = c.machine("worker2")
        got: list[dict] = []
        ev = threading.Event()

        def on(u: dict) -> None:
            got.append(u)
            ev.set()

        rm.on_update(on)
        d.cmd("add worker2 Bar")
        assert ev.wait(2)
        assert got[0]["added"] == ["Bar"] and got[0]["removed"] == []
        assert got[0]["mutations"] == [{"type": "add", "called": ["Bar"], "args": {}}]


def test_ipc_endpoint(tmp_path) -> None:
    from machine import Machine, State
    from transport import expose

    m = Machine({"A": State()}, id="ipc1")
    ep = expose(m, addr=f"ipc://{tmp_path}/am.sock")
    try:
        with connect(ep.address) as c:
            rm = c.machine("ipc1")
            assert rm.add("A") == Result.EXECUTED and m.is_active("A")
    finally:
        ep.stop()


def test_payloads_reach_one_client_or_all() -> None:
    import threading as th

    from machine import Machine, State
    from transport import expose

    m = Machine({"A": State()}, id="pay1")
    ep = expose(m)
    try:
        with connect(ep.address) as c1, connect(ep.address) as c2:
            got1: list[dict] = []
            got2: list[dict] = []
            ev1, ev2 = th.Event(), th.Event()
            c1.on_payload(lambda p: (got1.append(p), ev1.set()))
            c2.on_payload(lambda p: (got2.append(p), ev2.set()))
            assert ep.send_payload("p1", {"hi": [1, 2]}, client=c1.id, mach="pay1") == 1
            assert ev1.wait(2)
            assert got1[0]["name"] == "p1" and got1[0]["data"] == {"hi": [1, 2]} and got1[0]["machine"] == "pay1"
            assert len(got1[0]["token"]) == 16
            assert ep.send_payload("all", "x") == 2
            assert ev2.wait(2) and got2[0]["name"] == "all"
            with pytest.raises(TypeError):
                ep.send_payload("bad", object())
    finally:
        ep.stop()


def test_replica_of_a_replica_follows_the_root_and_closing_mirrors_leaves_the_source() -> None:
    from machine import Machine, State
    from transport import expose

    root = Machine({"Start": State(), "Ready": State(require="Start"), "M": State(multi=True)}, id="root")
    root.add("Start")
    ep1 = expose(root)
    c1 = connect(ep1.address)
    r1 = c1.machine("root")
    ep2 = expose(r1)  # a replica, served again
    c2 = connect(ep2.address)
    try:
        r2 = c2.machine("root")
        w = r2.when("Ready")
        root.add("Ready")  # a change on the root reaches the replica of the replica by pushes alone
        assert w.wait(timeout=2) and r2.is_active("Start", "Ready")
        assert r2.add("M") == Result.EXECUTED  # and a mutation travels up to the root
        assert root.tick("M") == 1 and r1.tick("M") == 1
        assert r1.when_queue(root.queue_tick).wait(timeout=1)  # when_queue works on a mirror
        c2.close()
        c1.close()
        assert r1.disposed and r2.disposed
        assert root.is_active("Start", "Ready")  # disposing mirrors never touches the source
    finally:
        c2.close()
        c1.close()
        ep2.stop()
        ep1.stop()


def test_mutate_many_pipelines_across_machines(daemon) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        mirror = c.machine("worker2")
        w = mirror.when("Bar")
        out = c.mutate_many([("worker0", "add", ["Foo"], None), ("worker1", "add", ["Baz"], {"deny": "1"}),
                             ("worker2", "add", ["Bar"], None), ("nope", "add", ["Foo"], None),
                             ("worker0", "add", ["Nope"], None), ("worker0", "remove", ["Foo"], None)])
        assert out[:3] == [Result.EXECUTED, Result.CANCELED, Result.EXECUTED]
        assert isinstance(out[3], TransportError) and out[3].code == "unknown_machine"
        assert isinstance(out[4], StateError)
        assert out[5] == Result.EXECUTED
        assert d.cmd("time worker0").split()[3] == "2"  # Foo added then removed, in order
        assert w.wait(timeout=2)  # a mirror of a machine changed this way hears of it by a push
        with pytest.raises(ValueError):
            c.mutate_many([("worker0", "toggle", ["Foo"], None)])


def _held(ep) -> threading.Event:
    """Hold the endpoint's I/O thread (a task posted to it) until the returned event is set: whatever the source
    does meanwhile reaches the clients in one push."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        held.set()
        release.wait(5)

    ep._post(hold)
    assert held.wait(5)
    return release


def test_on_update_reports_each_transition_of_a_coalesced_push() -> None:
    from machine import Machine, State
    from transport import expose

    src = Machine({"A": State(), "B": State(remove=("A",)), "M": State(multi=True)}, id="src")
    ep = expose(src)
    rep_ep = None
    try:
        with connect(ep.address) as c:
            rm = c.machine("src")
            rep_ep = expose(rm, addr="tcp://127.0.0.1:*")  # a replica passes the steps on
            with connect(rep_ep.address) as c2:
                rr = c2.machine("src")
                got: dict[str, list[dict]] = {"mirror": [], "replica": []}
                done = threading.Event()

                def on(kind: str):
                    def fn(u: dict) -> None:
                        got[kind].append(u)
                        if len(got["mirror"]) >= 4 and len(got["replica"]) >= 4:
                            done.set()
                    return fn

                rm.on_update(on("mirror"))
                rr.on_update(on("replica"))
                release = _held(ep)
                try:
                    src.add("A")
                    src.add("B", args={"n": 1})
                    src.remove("B")
                    src.add("M")
                    src.remove("B")  # not active: no change, no step
                finally:
                    release.set()
                assert done.wait(5), got
                for kind in ("mirror", "replica"):
                    steps = [(u["added"], u["removed"], u["ticked"], [m["called"] for m in u["mutations"]])
                             for u in got[kind]]
                    assert steps == [
                        (["A"], [], [], [["A"]]),
                        (["B"], ["A"], [], [["B"]]),
                        ([], ["B"], [], [["B"]]),
                        (["M"], [], [], [["M"]]),
                    ], kind
                    assert got[kind][1]["mutations"][0]["args"] == {"n": 1}
                    assert got[kind][-1]["time"] == src.time()
    finally:
        if rep_ep is not None:
            rep_ep.stop()
        ep.stop()


def test_a_push_never_outruns_the_record_of_its_mutation() -> None:
    # the source sets its clock, runs its final handlers, then records the mutation (transition_end): a flush in
    # between saw the new clock without the mutation, and the watcher got that step with no mutation (and the
    # mutation was then lost). Here a final handler holds that window open while a flush is due.
    from machine import Event, Machine, State
    from transport import expose

    entered, go = threading.Event(), threading.Event()

    class H:
        def BState(self, e: Event) -> None:
            entered.set()
            go.wait(5)

    src = Machine({"A": State(), "B": State()}, id="win", handlers=H())
    ep = expose(src)
    t = None
    try:
        with connect(ep.address) as c:
            rm = c.machine("win")
            got: list[dict] = []
            rm.on_update(got.append)
            release = _held(ep)
            try:
                src.add("A")  # recorded, the machine dirty
                t = threading.Thread(target=lambda: src.add("B", args={"n": 2}))
                t.start()
                assert entered.wait(5)  # B's clock is out, its mutation not yet recorded
            finally:
                release.set()
            assert until(lambda: bool(got) or "win" in getattr(ep, "_later", ()))  # the flush ran
            go.set()
            t.join(5)
            assert until(lambda: sum(len(u["mutations"]) for u in got) >= 2)  # both transitions reported
            assert [(u["added"], [m["called"] for m in u["mutations"]]) for u in got] == [
                (["A"], [["A"]]), (["B"], [["B"]])]
            assert got[1]["mutations"][0]["args"] == {"n": 2}
    finally:
        go.set()
        if t is not None:
            t.join(5)
        ep.stop()


def test_a_mutation_from_a_callback_of_a_summed_push_reaches_the_mirror() -> None:
    # on_update gets one update per transition of a summed push; a mutation made from one of those callbacks
    # gets its reply's diff against the push's last clock, which the mirror must already show
    from machine import Machine, State
    from transport import expose

    src = Machine({"A": State(), "B": State(), "C": State(), "Foo": State()}, id="cb")
    ep = expose(src)
    try:
        with connect(ep.address) as c:
            rm = c.machine("cb")
            results: list[int] = []
            done = threading.Event()

            def on(u: dict) -> None:
                if u["added"] == ["B"]:
                    results.append(rm.add("Foo"))  # a round trip on this client, from its callback
                if u["added"] == ["C"]:
                    done.set()

            rm.on_update(on)
            release = _held(ep)
            try:
                src.add("A")
                src.add("B")
                src.add("C")
            finally:
                release.set()
            assert done.wait(5)
            assert results == [Result.EXECUTED] and src.is_active("Foo")
            assert rm.is_active("Foo") and rm.time() == src.time()
    finally:
        ep.stop()


def test_a_callback_that_raises_system_exit_stops_no_other_client() -> None:
    from machine import Machine, State
    from transport import expose

    src = Machine({"A": State(multi=True)}, id="sx")
    ep = expose(src)
    try:
        with connect(ep.address) as bad, connect(ep.address) as good:
            rb, rg = bad.machine("sx"), good.machine("sx")

            def exits(u: dict) -> None:
                raise SystemExit(3)

            rb.on_update(exits)
            for n in (1, 2):  # ticks to come: A is multi, so a second add re-enters it (+2)
                w = rg.when_ticks("A", n)
                src.add("A")
                assert w.wait(5), "the other client stopped receiving"
            assert until(lambda: rb.tick("A") == src.tick("A"))  # and the bad one's mirror too
    finally:
        ep.stop()


def test_client_io_thread_sleeps_while_a_caller_holds_the_socket_past_its_beat() -> None:
    """A caller making calls back to back holds its client's socket; once that client's heartbeat is due, the I/O
    thread must keep sleeping between its 2 ms looks, not spin on zero-timeout waits (which starved the callers
    of the GIL: replies up to 0.6 s late)."""
    from machine import Machine, State
    from transport import expose
    from transport import reactor as R

    class Counting(R.Reactor):
        zero_waits = 0
        waits = 0

        def _run(self) -> None:
            real, outer = self._ep, self

            class CountingEpoll:
                def poll(self, timeout: float) -> list[tuple[int, int]]:
                    outer.waits += 1
                    outer.zero_waits += timeout <= 0
                    return real.poll(timeout)

                def __getattr__(self, name: str) -> object:
                    return getattr(real, name)

            self._ep = CountingEpoll()  # type: ignore[assignment]
            super()._run()

    src = Machine({"A": State(multi=True)}, id="beat")
    ep = expose(src)
    old = R._the_reactor
    reactor = R._the_reactor = Counting()  # this test's clients get a counted I/O thread of their own
    try:
        with connect(ep.address) as c:
            assert c._reactor is reactor
            rm = c.machine("beat")
            end = time.monotonic() + 1.6  # past the first heartbeat (1 s)
            while time.monotonic() < end:
                rm.add("A")
            assert rm.tick("A") == src.tick("A")
    finally:
        R._the_reactor = old
        ep.stop()
    # about one look per 2 ms at most; the spin made hundreds of thousands of zero-timeout waits
    assert reactor.zero_waits < 100, (reactor.zero_waits, reactor.waits)
