"""The relations algorithm (spec sections 4 and 5) and the per-schema cache of its results.

A ``Plan`` is everything about a transition that depends only on the schema, the mutation (type, called
states, auto/check flags) and the active states before it: the target, acceptance, enters/exits, tick deltas
and the handler names to dispatch. Plans are pure, so they are cached per schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .handlers import Binding
from .log import LogLevel
from .mutation import MutationType
from .schema import Compiled

ADD, REMOVE, SET = MutationType.ADD, MutationType.REMOVE, MutationType.SET

# handler kinds in Plan.fin
END, STATE = 0, 1


def _dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def expand_add(
    c: Compiled, names: list[str], before: frozenset[str], mtype: MutationType, called: tuple[str, ...]
) -> list[str]:
    """One level of ``add`` relations: appended names are not expanded again (spec: add depth 2)."""
    out = list(names)
    seen: set[str] = set()
    for n in names:
        if n in seen or (n in before and n not in c.multi):
            continue
        adds = c.add[n]
        if not adds:
            continue
        if mtype == REMOVE:
            adds = tuple(a for a in adds if a not in called)
        if adds:
            out.extend(adds)
            seen.add(n)
    return out


def drop_unmet_requires(
    c: Compiled, names: list[str], log: list[tuple[int, str]] | None, tag: str
) -> list[str]:
    """Drop states whose requirements are missing, until nothing changes."""
    while True:
        have = set(names)
        kept = []
        dropped = []
        for n in names:
            missing = [r for r in c.require[n] if r not in have]
            if missing:
                dropped.append(f"{n}(-{' -'.join(missing)})")
            else:
                kept.append(n)
        if not dropped:
            return kept
        if log is not None:
            log.append((LogLevel.DECISIONS, f"[{tag}] {' '.join(dropped)}"))
        names = kept


def sort_states(c: Compiled, names: list[str]) -> list[str]:
    """Order states: required ones first (require topology), then ``after`` by Go's insertion sort.

    The ``after`` comparator is not transitive, so this must stay an insertion sort (not ``sorted``).
    """
    topo = c.topo
    if topo and len(names) > 1:
        names.sort(key=lambda n: topo.get(n, -1))
    after = c.after
    n = len(names)
    if n < 2:
        return names
    for i in range(1, n):
        j = i
        while j > 0:
            a, b = names[j], names[j - 1]
            # less(a, b): False if b in after(a); True if a in after(b)
            if b in after[a] or a not in after[b]:
                break
            names[j], names[j - 1] = b, a
            j -= 1
    return names


def resolve(
    c: Compiled,
    mtype: MutationType,
    called: tuple[str, ...],
    before: tuple[str, ...],
    is_auto: bool,
    log: list[tuple[int, str]] | None,
) -> list[str]:
    """The target states of a mutation (spec section 4), sorted (section 5)."""
    before_set = frozenset(before)
    tag = "reject:auto" if is_auto else "reject"
    if mtype == ADD:
        to_set = list(called) + list(before)
    elif mtype == REMOVE:
        to_set = [s for s in before if s not in called]
    else:
        to_set = list(called)
    s = _dedupe(to_set)
    s = _dedupe(expand_add(c, s, before_set, mtype, called))
    s = drop_unmet_requires(c, s, log, tag)
    remove = c.remove
    blocked: set[str] = set()
    kept: list[str] = []
    for n in reversed(s):
        by = [b for b in s if n in remove[b] and b not in blocked]
        if by:
            blocked.add(n)
            if log is not None:
                log.append((LogLevel.DECISIONS, f"[rel:remove] {n} by {' '.join(by)}"))
            continue
        kept.append(n)
    removing: set[str] = set()
    for n in kept:
        removing |= remove[n]
    kept = _dedupe([n for n in expand_add(c, kept, before_set, mtype, called) if n not in removing])
    kept.reverse()
    target = drop_unmet_requires(c, kept, log, tag)
    return sort_states(c, target)


def reject_reason(c: Compiled, mtype: MutationType, called: tuple[str, ...], before: tuple[str, ...],
                  is_auto: bool) -> str:
    """Why the relations reject a mutation, in words: ``B requires Foo (not active)``, ``B removed by A``.

    Resolves again with a log (only when asked: a canceled transition's reason is read rarely)."""
    log: list[tuple[int, str]] = []
    target = set(resolve(c, mtype, called, before, is_auto, log))
    why: dict[str, str] = {}
    for _, line in log:
        tag, _, rest = line.partition("] ")
        if tag.startswith("[reject"):
            for item in rest.split(" "):
                name, _, missing = item.partition("(-")
                needs = missing.rstrip(")").replace(" -", ", ")
                why.setdefault(name, f"{name} requires {needs} (not active)")
        elif tag == "[rel:remove":
            name, _, by = rest.partition(" by ")
            why.setdefault(name, f"{name} removed by {by.replace(' ', ', ')}")
    lost = [s for s in called if s not in target]
    parts = [why.get(s, f"{s} removed by the relations") for s in lost]
    return "; ".join(parts) or "rejected by the relations"


BoundNeg = list[tuple[str, "str | None", list[tuple[Binding, Callable[..., Any]]]]]
BoundFin = list[tuple[str, str, int, list[tuple[Binding, Callable[..., Any]]]]]


class Plan:
    """The schema-determined part of one transition (see module docstring)."""

    __slots__ = (
        "target", "accepted", "enters", "exits", "deltas", "neg", "fin", "log", "final_target",
        "final_enters", "final_exits", "final_deltas", "health", "auto", "before",
    )
    target: tuple[str, ...]
    accepted: bool
    enters: tuple[str, ...]
    exits: tuple[str, ...]
    deltas: tuple[tuple[int, int], ...]
    neg: tuple[tuple[str, str | None], ...]
    fin: tuple[tuple[str, str, int], ...]
    log: tuple[tuple[int, str], ...]
    final_target: tuple[str, ...]
    final_enters: tuple[str, ...]
    final_exits: tuple[str, ...]
    final_deltas: tuple[tuple[int, int], ...]
    health: bool
    # the auto transition after this plan's change: execution.auto_entry of final_target, or plain.NO_AUTO when
    # none follows this plan (an auto plan, a health check, no change); cached here by the plain path (None until then)
    auto: tuple[tuple[str, ...], bool, Plan | None] | None
    # active states equal to those it was made from, the tuple last looked up with (the plain path's identity
    # check of Compiled.recent, see execution.recent_plan)
    before: tuple[str, ...]


def _enters_exits(
    c: Compiled, target: list[str], before: tuple[str, ...], called: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[int, int], ...]]:
    target_set = set(target)
    before_set = set(before)
    multi = c.multi
    enters = tuple(s for s in target if s not in before_set or (s in multi and s in called))
    exits = tuple(sort_states(c, [s for s in before if s not in target_set]))
    index = c.index
    deltas: list[tuple[int, int]] = []
    for s in exits:
        deltas.append((index[s], 1))
    for s in enters:
        deltas.append((index[s], 2 if s in before_set else 1))
    return enters, exits, tuple(deltas)


def make_plan(
    c: Compiled,
    mtype: MutationType,
    called: tuple[str, ...],
    before: tuple[str, ...],
    is_auto: bool,
    is_check: bool,
) -> Plan:
    """Resolve a mutation against the active states ``before``."""
    log: list[tuple[int, str]] = []
    p = Plan()
    p.auto = None
    p.before = before
    target = resolve(c, mtype, called, before, is_auto, log)
    p.target = tuple(target)
    p.health = mtype == ADD and len(called) == 1 and called[0] in ("Healthcheck", "Heartbeat")
    target_set = set(target)
    not_acc: list[str] = []
    if mtype == REMOVE:
        accepted = True
    else:
        not_acc = [s for s in called if s not in target_set]
        if is_auto:
            accepted = len(not_acc) < len(called)
        elif is_check and any(s in c.multi for s in called):
            accepted = True
        else:
            accepted = not not_acc
    implied = [s for s in target if s not in called and s not in before]
    if implied:
        log.append((LogLevel.DECISIONS, f"[implied] {' '.join(implied)}"))
    p.accepted = accepted
    if not accepted and not is_auto:
        log.append((LogLevel.OPS, f"[cancel:reject] {' '.join(not_acc)}"))
    elif is_auto and not_acc:
        log.append((LogLevel.OPS, f"[cancel:reject] {' '.join(not_acc)}"))
    p.log = tuple(log)
    enters, exits, deltas = _enters_exits(c, target, before, called)
    p.enters, p.exits, p.deltas = enters, exits, deltas
    # negotiation handlers: (name, owner state or None)
    neg: list[tuple[str, str | None]] = []
    for s in exits:
        neg.append((s + "Exit", s))
    for s in enters:
        neg.append((s + "Enter", s))
    before_set = set(before)
    if mtype != REMOVE:
        for s in target:
            if s in before_set:
                neg.append((s + s, s))
    for b in before:
        for a in target:
            if a != b:
                neg.append((b + a, a))
    neg.append(("AnyEnter", None))
    p.neg = tuple(neg)
    # auto transitions are re-resolved without the called states that did not survive (drops their adds)
    if is_auto and accepted:
        clean = tuple(s for s in called if s in target_set)
        final = resolve(c, ADD, clean, before, True, None) if clean != called else target
        p.final_target = tuple(final)
        p.final_enters, p.final_exits, p.final_deltas = _enters_exits(c, final, before, clean)
    else:
        p.final_target, p.final_enters, p.final_exits, p.final_deltas = p.target, enters, exits, deltas
    p.fin = final_handlers(p.final_exits, p.final_enters)
    return p


def final_handlers(exits: tuple[str, ...], enters: tuple[str, ...]) -> tuple[tuple[str, str, int], ...]:
    """``<S>End`` for exits, then ``<S>State`` for enters: (name, state, kind)."""
    return tuple([(s + "End", s, END) for s in exits] + [(s + "State", s, STATE) for s in enters])


def auto_states(c: Compiled, active: tuple[str, ...]) -> tuple[str, ...]:
    """Auto states that are inactive and not removed by any active state, in index order."""
    active_set = set(active)
    removed: set[str] = set()
    for a in active:
        removed |= c.remove[a]
    return tuple(s for s in c.auto_names if s not in active_set and s not in removed)
