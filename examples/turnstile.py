"""The classic turnstile FSM on asyncmachine: states Locked / Unlocked, inputs InputCoin / InputPush.

Part 1 replays spec scenario T46 with relations only (no handlers): ``Locked`` is an auto state, so it comes
back by itself whenever nothing blocks it, and ``Locked`` / ``Unlocked`` remove each other.
Part 2 binds handlers that consume the inputs, and feeds a scripted input sequence, printing every transition.

Run: .venv/bin/python examples/turnstile.py
"""

from __future__ import annotations

from machine import Event, Machine, Result, State, StateNames, Tracer, Transition


class S(StateNames):
    # input states
    InputPush: str
    InputCoin: str
    # "state" states
    Locked: str
    Unlocked: str


# Locked and Unlocked are mutually exclusive: each removes the group (a state removing itself is dropped when
# the schema is parsed). Locked is auto: the machine adds it after any transition unless a relation blocks it.
GROUP_LOCK = (S.Locked, S.Unlocked)
SCHEMA = {
    S.InputPush: State(),
    S.InputCoin: State(),
    S.Locked: State(auto=True, remove=GROUP_LOCK),
    S.Unlocked: State(remove=GROUP_LOCK),
}


def spec_t46() -> None:
    """Spec T46, verbatim: relations only, no handlers."""
    mach = Machine(SCHEMA, id="t46")
    mach.add(S.InputCoin)
    print(f"  add InputCoin     -> {mach}")  # the auto Locked came along
    assert str(mach) == "(InputCoin:1 Locked:1)"
    mach.add(S.Unlocked)
    print(f"  add Unlocked      -> {mach.string_all()}")  # Unlocked removed Locked; auto is blocked
    assert mach.is_active(S.Unlocked) and mach.tick(S.Locked) == 2
    mach.remove(S.Unlocked)
    print(f"  remove Unlocked   -> {mach}")  # nothing blocks Locked any more: auto re-adds it
    assert str(mach) == "(InputCoin:1 Locked:3)"
    mach.dispose()


class Turnstile:
    """Handlers: an input is consumed (removed) once handled, so the next identical input is a new activation."""

    def __init__(self) -> None:
        self.coins = 0  # coins kept by the turnstile
        self.passed = 0  # people who went through

    def InputCoinState(self, e: Event) -> None:
        m = e.machine
        self.coins += 1
        if m.is_active(S.Locked):
            m.add(S.Unlocked)  # queued: runs right after this transition
        m.remove(S.InputCoin)  # consume the input

    def InputPushEnter(self, e: Event) -> bool:
        # negotiation: a push on a locked turnstile is refused (the transition is canceled)
        return e.machine.is_active(S.Unlocked)

    def InputPushState(self, e: Event) -> None:
        m = e.machine
        self.passed += 1
        m.remove(S.Unlocked)  # Locked (auto) comes back by itself
        m.remove(S.InputPush)


class PrintChanges(Tracer):
    """Prints each accepted transition that changed something: +entered -exited."""

    def transition_end(self, tx: Transition) -> None:
        if tx.is_accepted and (tx.enters or tx.exits):
            kind = "auto" if tx.is_auto else str(tx.type)
            changes = " ".join([f"+{s}" for s in tx.enters] + [f"-{s}" for s in tx.exits])
            print(f"      [{kind:6}] {' '.join(tx.called_states):17} {changes}")


def run(inputs: list[str]) -> list[tuple[str, str, str, str]]:
    """Feed ``inputs`` ("coin" / "push"); returns (input, before, after, result) per input."""
    handlers = Turnstile()
    mach = Machine(SCHEMA, id="turnstile", handlers=handlers, tracers=[PrintChanges()])
    mach.add(S.Locked)
    rows = []
    for word in inputs:
        before = mach.switch(S.Locked, S.Unlocked) or "?"
        state = S.InputCoin if word == "coin" else S.InputPush
        print(f"  {word}:")
        res = mach.add(state)  # runs the whole chain (handlers, queued mutations, auto) before returning
        after = mach.switch(S.Locked, S.Unlocked) or "?"
        result = Result(res).name.lower()  # EXECUTED or CANCELED (a queue tick only when called from a handler)
        rows.append((word, before, after, result))
        print(f"    {before:8} -> {after:8} ({result})  {mach}")
    print(f"  coins={handlers.coins} passed={handlers.passed}")
    mach.dispose()
    return rows


def main() -> None:
    print("spec T46 (relations only):")
    spec_t46()
    print("turnstile with handlers:")
    script = ["push", "coin", "push", "push", "coin", "coin", "push"]
    rows = run(script)
    # the classic FSM table: a coin unlocks, a push locks, a push on a locked turnstile is refused
    expected = ["Locked", "Unlocked", "Locked", "Locked", "Unlocked", "Unlocked", "Locked"]
    assert [r[2] for r in rows] == expected, rows
    print("transitions:", " ".join(f"{w}->{a}" for w, _, a, _ in rows))


if __name__ == "__main__":
    main()
