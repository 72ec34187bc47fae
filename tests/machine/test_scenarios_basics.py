"""Spec section 19, "Basics and clocks": T01-T04."""

import pytest

from machine import Result, State, StateError

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t01_state_order_is_dict_order_with_exception_appended(make):
    # Go sorts names ([B Exception Z a b]); the port keeps dict order and appends Exception.
    mach = make({"b": State(), "B": State(), "a": State(), "Z": State()})
    assert mach.state_names == ["b", "B", "a", "Z", "Exception"]
    assert mach.schema["Exception"] == State(multi=True)
    assert mach.string_all() == "() [b:0 B:0 a:0 Z:0 Exception:0]"


def test_t02_add_remove_set_toggle_and_getters(make):
    mach = make()
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"
    assert mach.add("B") == EXECUTED
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"
    assert mach.remove("C") == EXECUTED
    assert mach.string_all() == "(A:1 B:1) [C:0 D:0 Exception:0]"
    assert mach.set("C", "D") == EXECUTED
    assert mach.string_all() == "(C:1 D:1) [A:2 B:2 Exception:0]"
    assert mach.remove("C") == EXECUTED
    assert mach.string_all() == "(D:1) [A:2 B:2 C:2 Exception:0]"
    assert mach.set() == EXECUTED
    assert mach.string_all() == "() [A:2 B:2 C:2 D:2 Exception:0]"

    mach.toggle("A")
    assert mach.string_all() == "(A:3) [B:2 C:2 D:2 Exception:0]"
    mach.toggle("A", "B")  # not all active: adds
    assert mach.string_all() == "(A:3 B:3) [C:2 D:2 Exception:0]"
    mach.toggle("A", "B")  # all active: removes
    assert mach.string_all() == "() [A:4 B:4 C:2 D:2 Exception:0]"
    assert str(mach) == "()"

    # getters on the final machine
    assert mach.is_active() is True
    assert mach.not_active() is True
    assert mach.any_active() is False
    assert mach.not_active("C", "D") is True
    assert mach.has("A", "Z") is False
    assert mach.index("B") == 1
    assert mach.index("Z") == -1
    assert mach.index("D") == 3
    assert list(mach.time()) == [4, 4, 2, 2, 0]
    assert list(mach.time("B", "A")) == [4, 4]
    assert mach.clock("A", "B") == {"A": 4, "B": 4}
    assert mach.tick("C") == 2
    assert mach.is_active("A", "Z") is False

    with pytest.raises(StateError, match="Z"):
        mach.add("Z")
    with pytest.raises(StateError, match="Z"):
        mach.not_active("Z")
    assert mach.string_all() == "() [A:4 B:4 C:2 D:2 Exception:0]"


def test_t03_multi_state_clocks(make, nr):
    mach = make(nr(B=State(multi=True)))

    def step(result, expected):
        assert result == EXECUTED
        assert list(mach.time("A", "B", "C", "D")) == expected

    step(mach.add("A", "B"), [1, 1, 0, 0])
    step(mach.add("A", "B"), [1, 3, 0, 0])
    step(mach.add("A", "B", "C"), [1, 5, 1, 0])
    step(mach.set("D"), [2, 6, 2, 1])
    step(mach.add("D", "C"), [2, 6, 3, 1])
    step(mach.remove("B", "C"), [2, 6, 4, 1])
    step(mach.add("A", "B"), [3, 7, 4, 1])
    step(mach.add("C"), [3, 7, 5, 1])

    assert sum(mach.time()) == 16
    # DESIGN: active_states() is in index order (the spec's active order was [C A B D]).
    assert mach.active_states() == ["A", "B", "C", "D"]


T04_SCHEMA = {
    "A": State(auto=True, require=("C",)),
    "B": State(multi=True, add=("C",)),
    "C": State(after=("D",)),
    "D": State(add=("C", "B")),
}


def test_t04_implied_multi_and_inspect(make):
    mach = make(T04_SCHEMA)
    mach.set("A", "C")
    assert mach.string_all() == "(A:1 C:1) [B:0 D:0 Exception:0]"
    assert mach.inspect() == (
        "1 A\n    |Tick     1\n    |Auto     true\n    |Require  C\n"
        "0 B\n    |Tick     0\n    |Multi    true\n    |Add      C\n"
        "1 C\n    |Tick     1\n    |After    D\n"
        "0 D\n    |Tick     0\n    |Add      C B\n"
        "0 Exception\n    |Tick     0\n    |Multi    true\n"
    )

    # A is lost through require
    mach.remove("C")
    assert mach.string_all() == "() [A:2 B:0 C:2 D:0 Exception:0]"

    # C is implied and A is re-added by auto
    mach.add("B")
    assert mach.string_all() == "(A:3 B:1 C:3) [D:0 Exception:0]"

    # B is implied but not called, so no +2
    mach.add("D")
    assert mach.string_all() == "(A:3 B:1 C:3 D:1) [Exception:0]"

    assert mach.inspect("D", "A") == (
        "1 D\n    |Tick     1\n    |Add      C B\n1 A\n    |Tick     3\n    |Auto     true\n    |Require  C\n"
    )
