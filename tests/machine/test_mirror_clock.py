"""A mirror's clock set from outside (``machine.mirror.set_clock``, what every push runs): the waiters it satisfies
resolve then and no others, a state's context ends before waiters bound to it are looked at, queries and queue
waiters still run; ``when_time``'s checks and its shared waiters."""

from __future__ import annotations

import pytest

from machine import Ctx, Machine, State, StateError, mirror

SCHEMA = {"M": State(multi=True), "Foo": State(), "Bar": State()}


def fresh() -> Machine:
    return mirror.new_mirror(SCHEMA, "m", None, ())


def at(m: Machine, **ticks: int) -> list[int]:
    t = list(mirror.clock_view(m))
    for name, v in ticks.items():
        t[m.state_names.index(name)] = v
    return t


def test_a_pushed_clock_resolves_exactly_the_waiters_it_satisfies() -> None:
    m = fresh()
    w3, w5 = m.when_time(["M"], [3]), m.when_time(["M"], [5])
    foo, not_foo = m.when("Foo"), m.when_not("Bar")
    assert not_foo.done  # Bar is inactive already
    seen: list[dict[str, int]] = []
    q = m.when_query(lambda c: seen.append(dict(c)) is None and c["M"] >= 3)
    mirror.set_clock(m, at(m, M=3), 1, 1, [0])
    assert w3.wait(0) and not w5.done and not foo.done
    assert q.wait(0) and seen[-1]["M"] == 3
    mirror.set_clock(m, at(m, M=3, Foo=1), 2, 2, [1])
    assert foo.wait(0) and not w5.done
    mirror.set_clock(m, at(m, M=5, Foo=1), 3, 3, [0])
    assert w5.wait(0)


def test_a_clock_given_without_changed_indexes_is_diffed_and_copied() -> None:
    m = fresh()
    w = m.when_time(["Foo"], [1])
    new = at(m, Foo=1)
    mirror.set_clock(m, new, 1, 1)
    new[1] = 7  # the caller's list was copied
    assert w.wait(0) and m.tick("Foo") == 1 and m.is_active("Foo")


def test_a_waiter_bound_to_a_state_context_ends_cancelled_when_that_state_changes() -> None:
    m = fresh()
    mirror.set_clock(m, at(m, Foo=1), 1, 1, [1])
    ctx = m.state_ctx("Foo")
    w = m.when_time(["M"], [1], ctx=ctx)
    # Foo ends and M ticks in the same push: the context ends first, so the waiter is cancelled, not resolved
    mirror.set_clock(m, at(m, Foo=2, M=1), 2, 2, [0, 1])
    assert ctx.done and w.done and w.cancelled
    # a waiter whose context lives on resolves in a push that also ends another state's context
    mirror.set_clock(m, at(m, Foo=3, M=1), 3, 3, [1])
    keep = Ctx()
    w2 = m.when_time(["M"], [3], ctx=keep)
    mirror.set_clock(m, at(m, Foo=4, M=3), 4, 4, [0, 1])
    assert w2.wait(0)


def test_queue_waiters_resolve_on_a_pushed_queue_tick() -> None:
    m = fresh()
    w = m.when_queue(5)
    mirror.set_clock(m, at(m, M=1), 4, 4, [0])
    assert not w.done
    mirror.set_clock(m, at(m, M=1), 5, 5, [])
    assert w.wait(0)


def test_when_time_checks_names_first_then_lengths() -> None:
    m = fresh()
    with pytest.raises(StateError):
        m.when_time(["Nope"], [1, 2])  # unknown state, and the lengths differ: the name is reported
    with pytest.raises(TypeError):
        m.when_time([3], [1])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        m.when_time(["M", "Foo"], [1])
    with pytest.raises(ValueError):
        m.when_time([], [])
    assert m.when_time("M", [0]).wait(0)  # a single name as a str; satisfied now
    ended = Ctx()
    ended.cancel()
    assert m.when_time(["M"], [1], ctx=ended).cancelled


def test_equal_when_time_calls_share_one_waiter_until_it_ends() -> None:
    m = fresh()
    a, b = m.when_time(["M"], [1]), m.when_time(("M",), (1,))
    assert a is b
    mirror.set_clock(m, at(m, M=1), 1, 1, [0])
    assert a.wait(0)
    c = m.when_time(["M"], [3])
    assert c is not a and not c.done
    mirror.close(m)
    assert c.cancelled
    assert m.when_time(["M"], [9]).cancelled  # a closed mirror: ended at once


def test_a_waiter_armed_from_the_callback_of_the_one_resolving_waits_for_the_next_clock() -> None:
    """What a mirror's user does per push (the fan-out bench too): re-arm in the waiter's callback."""
    m = fresh()
    seen: list[int] = []

    def arm() -> None:
        w = m.when_time(["M"], [m.tick("M") + 1])

        def done() -> None:
            if not w.cancelled:
                seen.append(m.tick("M"))
                arm()

        w.on_done(done)

    arm()
    for t in range(1, 200, 2):
        mirror.set_clock(m, at(m, M=t), t, t, [0])
    assert seen == list(range(1, 200, 2))


def test_when_time_takes_its_times_through_int_unless_they_are_ints() -> None:
    m = fresh()
    a = m.when_time(["M"], [3])
    assert m.when_time(["M"], [3.0]) is a and m.when_time(["M"], ["3"]) is a  # type: ignore[list-item]
    assert m.when_time(["M"], [True]).wait(0) is False  # True is 1: not reached yet, not shared with a
    with pytest.raises(ValueError):
        m.when_time(["M"], ["x"])  # type: ignore[list-item]
    mirror.set_clock(m, at(m, M=3), 1, 1, [0])
    assert a.wait(0)
