"""Waiters across real threads, where a pushed clock takes its due waiters out of their tables under the machine's
lock (``set_clock``, ``check_subs``) and a waiter's signal is taken with acquire / release: each waiter ends once,
with one outcome, its callbacks run once, and nothing is left registered once every waiter ended."""

from __future__ import annotations

import threading

from machine import Ctx, Machine, State, mirror
from machine.subscriptions import NO_SUBS

SCHEMA = {"M": State(multi=True), "Foo": State()}
JOIN = 10.0


def at(m: Machine, **ticks: int) -> list[int]:
    t = list(mirror.clock_view(m))
    for name, v in ticks.items():
        t[m.state_names.index(name)] = v
    return t


def _run(*fns: object) -> None:
    """Start each function on its own thread at once (a barrier), join them all within JOIN seconds."""
    barrier = threading.Barrier(len(fns))
    errors: list[BaseException] = []

    def body(fn: object) -> None:
        try:
            barrier.wait(JOIN)
            fn()  # type: ignore[operator]
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(fn,)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
        assert not t.is_alive(), "a thread did not finish"
    assert not errors, errors


def _push_and_cancel_at_once(id: str) -> None:
    m = mirror.new_mirror(SCHEMA, id, None, ())
    ctx = Ctx()
    w = m.when_time(["M"], [2], ctx=ctx)
    calls: list[bool] = []
    w.on_done(lambda: calls.append(w.cancelled))
    _run(lambda: mirror.set_clock(m, at(m, M=2), 1, 1, [m.state_names.index("M")]), ctx.cancel)
    assert w.done and calls == [w.cancelled]
    assert m._subs is NO_SUBS  # taken by the push or forgotten by the cancel: not left in a table


def test_a_push_and_a_ctx_ending_at_once_end_the_waiter_once_and_leave_nothing_registered() -> None:
    for i in range(300):
        _push_and_cancel_at_once(f"m{i}")


def _on_done_while_resolving(id: str) -> None:
    m = mirror.new_mirror(SCHEMA, id, None, ())
    w = m.when("Foo")
    calls: list[int] = []
    foo = m.state_names.index("Foo")
    _run(lambda: w.on_done(lambda: calls.append(1)), lambda: mirror.set_clock(m, at(m, Foo=1), 1, 1, [foo]))
    assert w.wait(0) and calls == [1]
    assert m._subs is NO_SUBS


def test_on_done_added_while_the_waiter_resolves_runs_once() -> None:
    for i in range(300):
        _on_done_while_resolving(f"m{i}")


def test_a_waiter_rearmed_per_push_sees_each_tick_once_while_other_threads_wait_and_cancel() -> None:
    m = mirror.new_mirror(SCHEMA, "m", None, ())
    pushes = 2000
    seen: list[int] = []

    def arm() -> None:
        w = m.when_time(["M"], [m.tick("M") + 1])

        def done() -> None:
            if not w.cancelled:
                seen.append(m.tick("M"))
                if m.tick("M") < 2 * pushes:
                    arm()

        w.on_done(done)

    arm()

    im, ifoo = m.state_names.index("M"), m.state_names.index("Foo")

    def push() -> None:
        for i in range(1, pushes + 1):
            mirror.set_clock(m, at(m, M=2 * i, Foo=i // 7), i, i, sorted((im, ifoo)) if i % 7 == 0 else [im])

    others: list[tuple[int, bool]] = []  # (tick waited for, resolved) of the other threads' waiters

    def wait_and_cancel(seed: int) -> None:
        for j in range(300):
            ctx = Ctx() if j % 3 else None  # no ctx: shared with the re-armed waiter when the tick is the same
            want = 2 * ((seed * 31 + j * 7) % pushes) + 2
            w = m.when_time(["M"], [want], ctx=ctx)
            if ctx is None:
                assert w.wait(JOIN)
            elif j % 3 == 1:
                ctx.cancel()
            else:
                w.cancel()
            if w.wait(0):
                others.append((want, True))

    _run(push, lambda: wait_and_cancel(1), lambda: wait_and_cancel(2), lambda: m.when("Foo").wait(JOIN))
    assert seen == [2 * i for i in range(1, pushes + 1)]
    assert all(m.tick("M") >= want for want, _ in others)
    assert m._subs is NO_SUBS  # every waiter ended and none was left behind in a table
