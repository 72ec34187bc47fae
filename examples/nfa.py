"""A nondeterministic finite automaton (NFA) on asyncmachine, using multi-state activation.

The NFA recognises the strings over {a, b} that end with "ab" (the regular language ``(a|b)*ab``):

    Q0 --a,b--> Q0        Q0 --a--> Q1        Q1 --b--> Q2 (accepting)

A deterministic machine is in one state at a time; an NFA is in a *set* of states. asyncmachine activates
several states at once, so the NFA's current set is simply the machine's active Q-states: after "a" both Q0
and Q1 are active. Relations do the rest:

- ``Start`` adds ``Q0`` (the initial set);
- ``Input`` is a multi state: each symbol re-enters it, and its handler computes the next set;
- ``Accepted`` is auto and requires ``Q2``: it turns on by itself when Q2 is active, and goes away with Q2;
- ``InputEnter`` negotiates: a symbol outside the alphabet cancels the transition (the word is rejected).

Each result is checked against Python's ``re`` module.

Run: .venv/bin/python examples/nfa.py [WORD...]
"""

from __future__ import annotations

import re
import sys

from machine import Event, Machine, Result, State, StateNames


class S(StateNames):
    Start: str
    Input: str
    Q0: str
    Q1: str
    Q2: str
    Accepted: str


ALPHABET = {"a", "b"}
Q_STATES = (S.Q0, S.Q1, S.Q2)
# the transition relation: (state, symbol) -> the set of next states (missing = no move, that branch dies)
DELTA: dict[tuple[str, str], set[str]] = {
    (S.Q0, "a"): {S.Q0, S.Q1},
    (S.Q0, "b"): {S.Q0},
    (S.Q1, "b"): {S.Q2},
}

SCHEMA = {
    S.Start: State(add=(S.Q0,)),
    S.Input: State(multi=True),
    S.Q0: State(),
    S.Q1: State(),
    S.Q2: State(),
    S.Accepted: State(auto=True, require=(S.Q2,)),
}


class Automaton:
    """Handlers: each ``Input`` computes the next set of Q-states from the active ones."""

    def InputEnter(self, e: Event) -> bool:
        return e.args.get("symbol") in ALPHABET  # negotiation: False cancels the transition

    def InputState(self, e: Event) -> None:
        m, symbol = e.machine, e.args["symbol"]
        current = [q for q in Q_STATES if m.is_active(q)]
        nxt: set[str] = set()
        for q in current:
            nxt |= DELTA.get((q, symbol), set())
        # queued (we are inside a transition): it runs right after this one; set() keeps only the named states,
        # so the Q-states that have no move for this symbol are deactivated, and Accepted follows Q2 by relations
        m.set(*sorted(nxt))


def accepts(mach: Machine, word: str, verbose: bool = True) -> bool:
    """Run ``word`` through the NFA machine; True when it ends in an accepting configuration."""
    # Start adds Q0, the initial set {Q0}. An Add relation fires only when its owner *activates*, so clear the
    # machine first: Start may still be active from the previous word (the empty word never removes it)
    mach.set()
    mach.add(S.Start)
    trail = [f"{{{','.join(mach.active_states(*Q_STATES))}}}"]
    for ch in word:
        # called from outside a handler, add() runs the transition and the queued set() before returning
        if mach.add(S.Input, args={"symbol": ch}) == Result.CANCELED:
            trail.append(f"-{ch}-> (symbol {ch!r} refused)")
            mach.set()  # no configuration: reject
            break
        trail.append(f"-{ch}-> {{{','.join(mach.active_states(*Q_STATES))}}}")
    ok = mach.is_active(S.Accepted)
    if verbose:
        print(f"  {word!r:10} {'ACCEPT' if ok else 'reject'}  {' '.join(trail)}")
    return ok


def main() -> None:
    words = sys.argv[1:] or ["ab", "aab", "abab", "ba", "", "a", "bbbab", "abba", "abc", "aabbab"]
    mach = Machine(SCHEMA, id="nfa", handlers=Automaton())
    print("language (a|b)*ab, NFA states active after each symbol:")
    wrong = []
    for w in words:
        got = accepts(mach, w)
        want = re.fullmatch(r"[ab]*ab", w) is not None
        if got != want:
            wrong.append(w)
    mach.dispose()
    print(f"{len(words) - len(wrong)}/{len(words)} agree with re.fullmatch(r'[ab]*ab', word)")
    if wrong:
        sys.exit(f"disagreement on {wrong}")


if __name__ == "__main__":
    main()
