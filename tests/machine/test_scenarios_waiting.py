"""Spec section 19, "Subscriptions and contexts": T67-T75.

Waiters are objects with `.done` / `.cancelled` / `.wait(timeout)`; waiters with the same arguments are the
same object. DESIGN: a waiter whose ctx is cancelled resolves at once (T73 is adapted).
"""

from machine import Ctx, Result, State

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t67_when(make):
    mach = make()
    mach.add("A")

    w_a = mach.when("A")
    assert w_a.done is True
    assert w_a.cancelled is False
    assert w_a.wait(timeout=1) is True

    w = mach.when("B", "C")
    assert w is mach.when("C", "B")
    assert w.done is False

    mach.add("B")
    assert w.done is False
    mach.remove("B")
    mach.add("C")
    assert w.done is False
    mach.add("B")
    assert w.done is True
    assert w.cancelled is False
    assert w.wait(timeout=1) is True

    assert mach.when().done is True


def test_t68_when_sees_states_active_within_one_run(make, record):
    mach = make()
    w = mach.when("B")

    def a_state(e):
        mach.add("B")
        mach.remove("B")

    record(mach, {"AState": a_state})
    assert mach.add("A") == EXECUTED
    assert mach.tick("B") == 2
    assert mach.not_active("B")
    assert w.done is True
    assert w.cancelled is False


def test_t69_when_not(make):
    mach = make()
    mach.set("B", "C")

    assert mach.when_not("D").done is True

    w = mach.when_not("B", "C")
    assert w.done is False
    mach.remove("B")
    assert w.done is False
    mach.remove("C")
    assert w.done is True
    assert w.cancelled is False


T04_SCHEMA = {
    "A": State(auto=True, require=("C",)),
    "B": State(multi=True, add=("C",)),
    "C": State(after=("D",)),
    "D": State(add=("C", "B")),
}


def test_t70_when_args(make):
    mach = make(T04_SCHEMA)

    w_b = mach.when_args("B", {"foo": "bar"})
    assert w_b.done is False
    mach.add("B", args={"foo": "foo"})
    assert w_b.done is False
    # B is multi, so it is entered again
    mach.add("B", args={"foo": "bar", "extra": 1})
    assert w_b.done is True
    assert w_b.cancelled is False

    assert mach.is_active("C")
    w_c = mach.when_args("C", {"x": 1})
    # C stays active: no State event
    mach.add("C", args={"x": 1})
    assert w_c.done is False
    # the auto transition re-adds C through the multi B's add, with no args
    mach.remove("C")
    assert mach.is_active("C")
    assert w_c.done is False
    # a no-op
    mach.add("C", args={"x": 1})
    assert w_c.done is False


def test_t71_when_time_and_when_ticks(make):
    mach = make()
    mach.set("A", "B")

    w1 = mach.when_time(["A", "B"], [5, 2])
    w2 = mach.when_time(["A", "B"], [9, 2])
    assert mach.when_time(["A", "B"], [5, 2]) is w1
    assert w1 is not w2

    mach.remove("A")
    mach.remove("B")
    mach.add("A")
    mach.add("B")
    assert mach.clock("A", "B") == {"A": 3, "B": 3}
    assert w1.done is False

    mach.remove("A")
    mach.add("A")
    assert mach.tick("A") == 5
    assert w1.done is True
    assert w1.cancelled is False
    assert w2.done is False

    assert mach.when_time(["A"], [5]).done is True

    # when_ticks(A, 2); A is active, so this is also when_next_active(A)
    wt = mach.when_ticks("A", 2)
    assert wt.done is False
    mach.remove("A")
    assert mach.tick("A") == 6
    assert wt.done is False
    mach.add("A")
    assert mach.tick("A") == 7
    assert wt.done is True


def test_t72_when_query(make):
    mach = make()
    mach.set("A")

    q1 = mach.when_query(lambda c: c["A"] > 4 * c["B"])
    q2 = mach.when_query(lambda c: c["A"] < c["B"])
    q3 = mach.when_query(lambda c: c["A"] == 1)
    # not checked at creation
    assert q3.done is False

    mach.add("B")
    mach.remove("A")
    mach.add("A")
    mach.remove("A")
    assert mach.clock("A", "B") == {"A": 4, "B": 1}
    assert q1.done is False
    assert q2.done is False
    assert q3.done is True
    assert q3.cancelled is False

    mach.add("A")
    assert mach.tick("A") == 5
    assert q1.done is True
    assert q2.done is False


def test_t73_waiter_ctx(make):
    mach = make()
    ctx = Ctx()
    w = mach.when("C", ctx=ctx)
    assert w.done is False

    # DESIGN: a waiter whose ctx ends resolves at once (Go waits for the next transition)
    ctx.cancel()
    assert w.done is True
    assert w.cancelled is True
    assert w.wait(timeout=1) is False

    mach.add("D")
    assert w.done is True
    assert w.cancelled is True

    done_ctx = Ctx()
    done_ctx.cancel()
    w2 = mach.when("C", ctx=done_ctx)
    assert w2.done is True
    assert w2.cancelled is True


def test_t74_state_ctx(make, nr):
    mach = make(nr(M=State(multi=True)))
    mach.add("A")

    ctx_a = mach.state_ctx("A")
    assert mach.state_ctx("A") is ctx_a
    assert ctx_a.done is False
    mach.add("A")  # no change
    assert ctx_a.done is False
    mach.remove("A")
    assert ctx_a.done is True
    assert ctx_a.wait(timeout=1) is True

    # works for inactive states too
    ctx_b = mach.state_ctx("B")
    assert ctx_b.done is False
    mach.add("B")
    assert ctx_b.done is True

    # a multi re-entry cancels the context
    mach.add("M")
    ctx_m = mach.state_ctx("M")
    assert ctx_m.done is False
    mach.add("M")
    assert ctx_m.done is True
    assert mach.tick("M") == 3
    ctx_m2 = mach.state_ctx("M")
    assert ctx_m2 is not ctx_m
    assert ctx_m2.done is False


def test_t75_when_err_and_dispose(make):
    mach = make()
    w_err = mach.when_err()
    assert w_err.done is False
    deadline = TimeoutError("deadline exceeded")
    mach.add_err(deadline)
    assert w_err.done is True
    assert w_err.cancelled is False

    w = mach.when("C")
    assert w.done is False
    mach.dispose()
    assert mach.when_disposed().wait(timeout=2) is True
    assert mach.disposed is True
    # dispose resolves the pending waiter, without its condition
    assert w.wait(timeout=2) is False
    assert w.done is True
    assert w.cancelled is True

    assert mach.add("A") == CANCELED
    assert mach.is_active("Exception") is False
    assert str(mach) == ""
    assert mach.err is deadline
