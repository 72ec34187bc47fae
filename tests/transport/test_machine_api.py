"""``MachineApi``: every member, one test body run on both implementations: a local ``Machine`` and a mirror of
the same machine served by a daemon process (tests/transport/daemon.py, machine ``worker0``).

``Subject.source(op, *states)`` changes the machine on its source's side (for the mirror: the daemon, over its
stdin); everything else goes through the ``MachineApi``. Where a mirror cannot honour a member, the test says
so: it raises ``MirrorLimitError`` there (and only there)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from daemon import SCHEMA, Handlers
from tr_util import Daemon

from machine import Ctx, Event, Machine, MachineApi, Result, State, StateError, Tracer, Transition
from machine.api import MachineApi as _Api
from transport import MirrorLimitError, connect, expose

COVERED: set[str] = set()


def covers(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    COVERED.update(names)
    return lambda fn: fn


class Subject:
    def __init__(self, kind: str, m: MachineApi, source: Callable[..., Any]) -> None:
        self.kind, self.m, self._source = kind, m, source

    @property
    def mirror(self) -> bool:
        return self.kind == "mirror"

    def source(self, op: str, *states: str) -> None:
        self._source(op, *states)


@pytest.fixture(params=["local", "mirror"])
def s(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "local":
        m = Machine(SCHEMA, id="worker0", parent="daemon", handlers=Handlers(0.0), handler_timeout=None)
        yield Subject("local", m, lambda op, *st: getattr(m, op)(*st))
        m.dispose()
        return
    d = Daemon("--hub")
    c = connect(d.addrs[0])
    try:
        yield Subject("mirror", c.machine("worker0"), lambda op, *st: d.cmd(f"{op} worker0 {' '.join(st)}"))
    finally:
        c.close()
        d.stop()


W = 5.0  # seconds any wait may take before the test fails


@covers("id", "parent_id", "tags", "state_names", "schema", "machine_tick", "queue_len", "index", "has")
def test_identity_and_schema(s: Subject) -> None:
    m = s.m
    assert isinstance(m, MachineApi)
    assert m.id == "worker0" and m.parent_id == "daemon" and m.tags == []
    assert m.state_names == list(SCHEMA)
    assert m.schema["Ready"].require == ("Start",) and m.schema["Multi"].multi
    assert m.machine_tick == 0 and m.queue_len == 0
    assert m.index("Foo") == 2 and m.index("Nope") == -1
    assert m.has("Foo", "Bar") and not m.has("Foo", "Nope")


@covers("add", "remove", "set", "toggle", "active_states", "tick", "time", "clock", "switch", "is_active",
        "any_active", "not_active")
def test_mutations_and_reads(s: Subject) -> None:
    m = s.m
    assert m.add("Foo") == Result.EXECUTED
    assert m.is_active("Foo") and m.active_states() == ["Foo"] and m.tick("Foo") == 1
    assert m.add("Bar") == Result.EXECUTED  # Bar removes Foo
    assert m.active_states("Foo", "Bar") == ["Bar"] and m.time("Foo", "Bar") == [2, 1]
    assert m.clock("Foo", "Bar") == {"Foo": 2, "Bar": 1} and m.switch("Baz", "Bar", "Foo") == "Bar"
    assert m.any_active("Foo", "Bar") and m.not_active("Foo", "Baz") and not m.is_active("Foo", "Bar")
    assert m.add("Ready") == Result.CANCELED  # requires Start
    assert m.set("Start", "Ready") == Result.EXECUTED and m.active_states() == ["Start", "Ready"]
    assert m.toggle("Ready") == Result.EXECUTED and not m.is_active("Ready")
    assert m.toggle("Ready") == Result.EXECUTED and m.is_active("Ready")
    assert m.remove("Start") == Result.EXECUTED and m.not_active("Start", "Ready")
    assert m.tick("Nope") == 0 and not m.is_active("Nope")
    with pytest.raises(StateError):
        m.add("Nope")
    with pytest.raises(StateError):
        m.not_active("Nope")


@covers("is_time", "was_time", "is_clock", "was_clock", "string_all", "inspect")
def test_time_checks_and_text(s: Subject) -> None:
    m = s.m
    m.add("Multi")
    m.add("Multi")
    assert m.is_time([3], ["Multi"]) and m.was_time([2], ["Multi"]) and not m.was_time([4], ["Multi"])
    assert m.is_clock({"Multi": 3, "Foo": 0}) and m.was_clock({"Multi": 1}) and not m.is_clock({"Multi": 1})
    assert m.string_all().startswith("(Multi:3) [Exception:0")
    assert m.inspect("Multi") == "1 Multi\n    |Tick     3\n    |Multi    true\n"


@covers("add_err", "add_err_state", "err", "is_err", "when_err")
def test_errors(s: Subject) -> None:
    m = s.m
    seen: list[tuple[list[str], Any]] = []
    m.bind_handlers({"ErrOnClientState": lambda e: seen.append((e.transition.called_states, e.args.get("err")))})
    w = m.when_err()
    assert not m.is_err() and m.err is None
    err = ValueError("bad input")
    assert m.add_err_state("ErrOnClient", err) == Result.EXECUTED
    assert w.wait(W) and m.is_err() and m.is_active("ErrOnClient") and m.err is err
    assert seen == [(["ErrOnClient", "Exception"], err)]  # ran before the call returned (nothing else in flight)
    assert m.add_err(None) == Result.CANCELED
    assert m.add_err(RuntimeError("again")) == Result.EXECUTED and m.tick("Exception") == 3


@covers("can_add", "can_remove")
def test_dry_runs_run_the_negotiation_handlers_where_they_are(s: Subject) -> None:
    m = s.m
    assert m.can_add("Baz") == Result.EXECUTED and not m.is_active("Baz")
    assert m.can_add("Baz", args={"deny": "1"}) == Result.CANCELED  # the source's BazEnter
    assert m.can_add("Ready") == Result.CANCELED and m.can_remove("Foo") == Result.EXECUTED


@covers("eval", "will_be")
def test_eval_and_will_be_run_on_the_source_only(s: Subject) -> None:
    ran: list[int] = []
    if s.mirror:
        with pytest.raises(MirrorLimitError, match="source"):
            s.m.eval(lambda: ran.append(1))
        with pytest.raises(MirrorLimitError, match="can_add"):
            s.m.will_be("Foo")
        assert ran == []
    else:
        assert s.m.eval(lambda: ran.append(1)) and ran == [1]
        assert s.m.will_be("Foo") is False  # nothing queued


@covers("when", "when_not", "when_ticks", "when_time", "when_query")
def test_waiters_resolve_on_source_changes(s: Subject) -> None:
    m = s.m
    on, off = m.when("Foo", "Start"), m.when_not("Bar")
    assert off.done and not on.done  # Bar is inactive: at once
    ticks = m.when_ticks("Multi", 2)
    at = m.when_time(["Start", "Foo"], [1, 1])
    q = m.when_query(lambda clock: clock["Start"] >= 1)
    s.source("add", "Foo")
    s.source("add", "Start")
    assert on.wait(W) and at.wait(W) and q.wait(W) and not ticks.done
    s.source("add", "Multi")
    s.source("add", "Multi")
    assert ticks.wait(W)
    off2 = m.when_not("Foo")
    s.source("add", "Bar")
    assert off2.wait(W)
    with pytest.raises(ValueError):
        m.when_time(["Foo"], [1, 2])


@covers("when_args")
def test_when_args(s: Subject) -> None:
    m = s.m
    w, other = m.when_args("Foo", {"job": 2}), m.when_args("Foo", {"job": 3})
    m.add("Foo", args={"job": 1})
    m.remove("Foo")
    assert not w.done
    m.add("Foo", args={"job": 2, "more": True})
    assert w.wait(W) and not other.done
    other.cancel()
    assert other.cancelled


@covers("when_queue", "queue_tick")
def test_queue_ticks(s: Subject) -> None:
    m = s.m
    q0 = m.queue_tick
    m.add("Foo")
    s.source("add", "Bar")
    assert m.when("Bar").wait(W) and m.queue_tick >= q0
    assert m.when_queue(m.queue_tick).wait(W) and m.when_queue(0).done


@covers("ctx", "state_ctx")
def test_contexts(s: Subject) -> None:
    m = s.m
    foo = m.state_ctx("Foo")
    assert not foo.done and not m.ctx.done
    s.source("add", "Foo")
    assert foo.wait(W)
    w = m.when("Bar", ctx=m.state_ctx("Foo"))
    s.source("remove", "Foo")
    assert w.wait(W) is False and w.cancelled  # its context ended with Foo's tick
    mine = Ctx()
    w2 = m.when_args("Baz", {"k": 1}, ctx=mine)
    mine.cancel()
    assert w2.cancelled


@covers("bind_handlers", "detach_handlers")
def test_final_handlers(s: Subject) -> None:
    m = s.m
    got: list[tuple[str, Any, int]] = []
    done = threading.Event()

    class H:
        def BarState(self, e: Event) -> None:
            got.append((e.name, e.args.get("n"), e.transition.time_after[m.index("Bar")]))

        def FooEnd(self, e: Event) -> None:
            got.append((e.name, e.args.get("n"), e.transition.time_after[m.index("Foo")]))

        def AnyState(self, e: Event) -> None:
            assert e.machine is m
            if e.args.get("n") == 2:
                done.set()

    h = H()
    m.add("Foo")
    m.bind_handlers(h)
    m.add("Bar", args={"n": 2})
    assert done.wait(W)
    assert got == [("FooEnd", 2, 2), ("BarState", 2, 1)]
    m.detach_handlers(h)
    with pytest.raises(ValueError):
        m.detach_handlers(h)

    neg = {"FooEnter": lambda e: True}
    if s.mirror:
        with pytest.raises(MirrorLimitError, match="negotiation"):
            m.bind_handlers(neg)
    else:
        m.bind_handlers(neg)


@covers("bind_tracer", "detach_tracer")
def test_tracers(s: Subject) -> None:
    m = s.m
    ended: list[tuple[list[str], dict[str, Any]]] = []
    done = threading.Event()

    class T(Tracer):
        def transition_end(self, tx: Transition) -> None:
            if tx.is_accepted and not tx.is_check:
                ended.append((tx.called_states, dict(tx.args)))
                done.set()

    t = T()
    m.bind_tracer(t)
    m.add("Foo", args={"a": 1})
    assert done.wait(W) and ended[-1] == (["Foo"], {"a": 1})
    m.detach_tracer(t)
    with pytest.raises(ValueError):
        m.detach_tracer(t)


@covers("dispose", "disposed", "on_dispose", "when_disposed")
def test_dispose(s: Subject) -> None:
    m = s.m
    called: list[int] = []
    m.on_dispose(lambda: called.append(1))
    w = m.when_disposed()
    ctx = m.ctx
    assert not m.disposed
    m.dispose()
    assert m.disposed and called == [1] and w.wait(W) and ctx.done
    m.on_dispose(lambda: called.append(2))  # at once once disposed
    assert called == [1, 2]


def test_every_member_of_machine_api_is_covered_here() -> None:
    members = {n for n in dir(_Api) if not n.startswith("_")}
    assert members - COVERED == set()
    assert COVERED - members == set()


# a machine and its mirror served in this process give the same answers

LOCAL_SCHEMA = {"A": State(), "B": State(require=("A",)), "C": State(remove=("A",))}


def _same(m: MachineApi) -> tuple[object, ...]:
    return (m.state_names, m.active_states(), m.clock(), m.is_active("A", "B"), m.any_active("C", "B"),
            m.not_active("C"), m.has("A", "Nope"), m.switch("C", "B", "A"), m.tick("A"), m.index("C"), str(m),
            m.string_all(), m.is_err(), m.parent_id, m.tags)


def test_a_machine_and_its_mirror_are_both_machine_apis_and_agree() -> None:
    m = Machine(LOCAL_SCHEMA, id="api", tags=("t",))
    m.add("A", "B")
    assert isinstance(m, MachineApi)
    with expose(m) as ep, connect(ep.address) as c:
        r = c.machine("api")
        assert isinstance(r, MachineApi)
        assert _same(r) == _same(m)
        r.add("C")
        assert _same(r) == _same(m) and m.is_active("C")
        assert r.when("C").wait(1) and m.when("C").wait(1)


def test_something_that_is_not_a_machine_is_not_a_machine_api() -> None:
    assert not isinstance(object(), MachineApi)
    with pytest.raises(TypeError):
        issubclass(int, MachineApi)    # a Protocol with properties: isinstance only, as documented
