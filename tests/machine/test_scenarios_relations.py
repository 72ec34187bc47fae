"""Spec section 19, "Relations": T05-T21.

DESIGN: `active_states()` is in index order, so the spec's active (target) order is checked on the
transition's `target_states` through a tracer.
"""

from machine import LogLevel, Result, State

EXECUTED = Result.EXECUTED
CANCELED = Result.CANCELED


def test_t05_require(make, nr, mlog, tx_tracer):
    tracer = tx_tracer()
    mach = make(nr(C=State(require=("D",))), log_level=LogLevel.DECISIONS, tracers=[tracer])
    mach.set("A")
    log = mlog("t")

    assert mach.set("C", "A") == CANCELED
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"
    assert "[reject] C(-D)" in log.text
    assert "[cancel:reject] C" in log.text

    assert mach.add("C") == CANCELED
    assert mach.set("C", "D") == EXECUTED
    assert mach.string_all() == "(C:1 D:1) [A:2 B:0 Exception:0]"
    # require topology: the required state comes first
    assert tracer.last_accepted_target == ["D", "C"]
    assert mach.active_states() == ["C", "D"]


def test_t06_require_cascade(make, nr, tx_tracer):
    tracer = tx_tracer()
    mach = make(nr(B=State(require=("A",)), C=State(require=("B",))), tracers=[tracer])
    assert mach.add("C") == CANCELED
    assert mach.add("C", "B") == CANCELED
    assert mach.add("A", "B", "C", "D") == EXECUTED
    assert mach.string_all() == "(A:1 B:1 C:1 D:1) [Exception:0]"

    assert mach.remove("A") == EXECUTED
    assert mach.string_all() == "(D:1) [A:2 B:2 C:2 Exception:0]"

    assert mach.add("C", "B", "A") == EXECUTED
    assert tracer.last_accepted_target == ["D", "A", "B", "C"]
    assert mach.active_states() == ["A", "B", "C", "D"]

    assert mach.set("A", "C") == CANCELED  # B is missing


def test_t07_remove_blocks_called(make, nr, mlog):
    mach = make(nr(C=State(remove=("D",))), log_level=LogLevel.DECISIONS)
    mach.set("D")
    log = mlog("t")

    assert mach.add("C") == EXECUTED
    assert mach.string_all() == "(C:1) [A:0 B:0 D:2 Exception:0]"
    # the active C blocks the called D
    assert mach.add("D") == CANCELED

    mach.set("D")
    assert mach.string_all() == "(D:3) [A:0 B:0 C:2 Exception:0]"
    assert mach.set("C", "D") == CANCELED
    assert mach.string_all() == "(D:3) [A:0 B:0 C:2 Exception:0]"
    assert "[rel:remove] D by C" in log.text
    assert "[cancel:reject] D" in log.text

    assert mach.add("D", "C") == CANCELED


def test_t08_mutual_remove_called_wins(make, nr):
    mach = make(nr(C=State(remove=("D",)), D=State(remove=("C",))))
    mach.set("D")
    assert mach.add("C") == EXECUTED
    assert mach.string_all() == "(C:1) [A:0 B:0 D:2 Exception:0]"
    assert mach.add("D") == EXECUTED
    assert mach.string_all() == "(D:3) [A:0 B:0 C:2 Exception:0]"
    assert mach.set("C") == EXECUTED
    assert mach.string_all() == "(C:3) [A:0 B:0 D:4 Exception:0]"
    assert mach.add("C", "D") == CANCELED
    assert mach.add("D", "C") == CANCELED
    assert mach.string_all() == "(C:3) [A:0 B:0 D:4 Exception:0]"


def test_t09_add_fires_only_on_activation(make, nr):
    mach = make(nr(A=State(remove=("D",)), C=State(add=("D",))))
    mach.set("C")
    assert mach.string_all() == "(C:1 D:1) [A:0 B:0 Exception:0]"
    assert mach.set("A", "C") == EXECUTED
    assert mach.string_all() == "(A:1 C:1) [B:0 D:2 Exception:0]"
    mach.remove("A")
    assert mach.string_all() == "(C:1) [A:2 B:0 D:2 Exception:0]"
    # an active owner does not re-add
    mach.add("C")
    assert mach.string_all() == "(C:1) [A:2 B:0 D:2 Exception:0]"
    mach.set("C")
    assert mach.string_all() == "(C:1) [A:2 B:0 D:2 Exception:0]"
    mach.add("D")
    assert mach.string_all() == "(C:1 D:3) [A:2 B:0 Exception:0]"
    assert mach.set("C", "A", "D") == CANCELED
    assert mach.string_all() == "(C:1 D:3) [A:2 B:0 Exception:0]"


def test_t10_remove_beats_implied_add(make):
    mach = make({"A": State(add=("B",)), "B": State(), "C": State(remove=("B",))})
    assert mach.add("A", "C") == EXECUTED
    assert mach.string_all() == "(A:1 C:1) [B:0 Exception:0]"


def test_t11_implied_state_removes_active_one(make):
    mach = make({"A": State(add=("B",)), "B": State(remove=("C",)), "C": State()})
    assert mach.add("C") == EXECUTED
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 B:1) [C:2 Exception:0]"


def test_t12_wet_dry_water(make):
    # Go's sorted order was [Dry Exception Water Wet]; here the order is the dict order below.
    mach = make(
        {
            "Wet": State(require=("Water",)),
            "Dry": State(remove=("Water",)),
            "Water": State(add=("Wet",), remove=("Dry",)),
        }
    )
    assert mach.state_names == ["Wet", "Dry", "Water", "Exception"]
    mach.add("Dry")
    assert mach.string_all() == "(Dry:1) [Wet:0 Water:0 Exception:0]"
    mach.add("Water")
    assert mach.string_all() == "(Wet:1 Water:1) [Dry:2 Exception:0]"
    mach.add("Dry")
    assert mach.string_all() == "(Dry:3) [Wet:2 Water:2 Exception:0]"


def test_t13_mutex(make, nr):
    mutex = ("A", "B", "C")
    mach = make(nr(A=State(remove=mutex), B=State(remove=mutex), C=State(remove=mutex)))
    # parse drops the state itself from its own remove list
    assert list(mach.schema["A"].remove) == ["B", "C"]
    mach.add("A")
    assert mach.string_all() == "(A:1) [B:0 C:0 D:0 Exception:0]"
    mach.add("B")
    assert mach.string_all() == "(B:1) [A:2 C:0 D:0 Exception:0]"
    mach.add("C")
    assert mach.string_all() == "(C:1) [A:2 B:2 D:0 Exception:0]"
    assert mach.add("A", "B") == CANCELED
    assert mach.string_all() == "(C:1) [A:2 B:2 D:0 Exception:0]"


def test_t14_add_require_remove_mix(make, tx_tracer):
    tracer = tx_tracer()
    mach = make(
        {
            "A": State(add=("B",)),
            "B": State(require=("D",), add=("C",)),
            "C": State(),
            "D": State(remove=("C",)),
            "E": State(add=("D",)),
        },
        tracers=[tracer],
    )
    assert mach.add("A", "E") == EXECUTED
    assert mach.string_all() == "(A:1 B:1 D:1 E:1) [C:0 Exception:0]"
    assert tracer.last_accepted_target == ["A", "E", "D", "B"]


def test_t15_add_depth_is_two(make, tx_tracer):
    tracer = tx_tracer()
    mach = make(
        {"A": State(add=("B",)), "B": State(add=("C",)), "C": State(add=("D",)), "D": State()},
        tracers=[tracer],
    )
    assert mach.state_names == ["A", "B", "C", "D", "Exception"]
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 B:1 C:1) [D:0 Exception:0]"
    assert tracer.last_accepted_target == ["C", "A", "B"]


def test_t16_called_beats_active_through_implied(make):
    mach = make({"A": State(remove=("B",)), "B": State(remove=("A",)), "Z": State(add=("B",))})
    mach.set("Z")
    assert mach.string_all() == "(B:1 Z:1) [A:0 Exception:0]"
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:1 Z:1) [B:2 Exception:0]"
    assert mach.add("Z") == EXECUTED
    assert mach.string_all() == "(A:1 Z:1) [B:2 Exception:0]"


def test_t17_remove_naming_target_filters_multi_add(make, nr):
    mach = make(nr(A=State(multi=True, add=("B",), require=("C",)), B=State(require=("C",))))
    mach.set("A", "B", "C")
    assert mach.string_all() == "(A:1 B:1 C:1) [D:0 Exception:0]"
    assert mach.remove("B") == EXECUTED
    assert mach.string_all() == "(A:1 C:1) [B:2 D:0 Exception:0]"
    assert mach.add("A") == EXECUTED
    assert mach.string_all() == "(A:3 B:3 C:1) [D:0 Exception:0]"


def test_t18_active_multi_reapplies_add(make, nr):
    mach = make(nr(B=State(multi=True, add=("C",))))
    mach.add("B")
    assert mach.string_all() == "(B:1 C:1) [A:0 D:0 Exception:0]"
    mach.remove("C")
    assert mach.string_all() == "(B:1) [A:0 C:2 D:0 Exception:0]"
    mach.add("A")
    assert mach.string_all() == "(A:1 B:1 C:3) [D:0 Exception:0]"
    mach.remove("C")
    mach.remove("A")
    # the active multi B keeps re-adding C
    assert mach.string_all() == "(B:1 C:5) [A:2 D:0 Exception:0]"


def test_t19_unknown_relation_targets(make):
    mach = make({"A": State(require=("Z",)), "B": State(add=("Y",), remove=("X",), after=("W",))})
    schema = mach.schema
    assert list(schema["A"].require) == ["Z"]
    assert list(schema["B"].add) == []
    assert list(schema["B"].remove) == []
    assert list(schema["B"].after) == []
    assert mach.add("A") == CANCELED
    assert mach.add("B") == EXECUTED


def test_t20_require_remove_conflict_starts_in_exception(make):
    mach = make({"A": State(require=("B",), remove=("B",)), "B": State()})
    assert mach.string_all() == "(Exception:1) [A:0 B:0]"
    assert "require-remove conflict for A to B" in str(mach.err)


def test_t21_implied_add_vs_remove(make):
    mach = make({"A": State(remove=("B",)), "B": State(), "C": State(add=("B",))})
    mach.add("A")
    assert mach.set("C") == EXECUTED
    assert mach.string_all() == "(B:1 C:1) [A:2 Exception:0]"
    mach.set("A")
    assert mach.add("C") == EXECUTED
    assert mach.string_all() == "(A:3 C:3) [B:2 Exception:0]"
