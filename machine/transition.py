"""``Transition`` (one mutation being applied) and ``Event`` (what a handler receives)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .mutation import Mutation, MutationType, _as
from .resolver import Plan

if TYPE_CHECKING:
    from .machine import Machine

_new = object.__new__


def tick_changes(names: list[str], before: list[int], after: list[int]) -> tuple[list[str], list[str], list[str]]:
    """The states activated, deactivated and ticked (active before and after, or on and off in between) from
    clock ``before`` to clock ``after``; a missing tick counts as 0."""
    added, removed, ticked = [], [], []
    nb, na = len(before), len(after)
    for i, n in enumerate(names):
        b = before[i] if i < nb else 0
        a = after[i] if i < na else 0
        if a == b:
            continue
        if a & 1 and not b & 1:
            added.append(n)
        elif b & 1 and not a & 1:
            removed.append(n)
        else:
            ticked.append(n)
    return added, removed, ticked


class Transition:
    """A mutation being applied. Read-only for handlers.

    During negotiation ``time_after`` is a prediction; after the target is applied it is the real clock.
    """

    __slots__ = (
        "_mach", "_seq", "mutation", "plan", "_before", "target", "enters", "exits", "time_before",
        "_time_after", "is_accepted", "is_completed", "_rejected", "_cancel",
    )

    _mach: Machine
    _seq: int
    mutation: Mutation
    plan: Plan
    _before: tuple[str, ...]
    target: tuple[str, ...]
    enters: tuple[str, ...]
    exits: tuple[str, ...]
    time_before: list[int]
    _time_after: list[int] | None
    is_accepted: bool
    is_completed: bool
    _rejected: set[str] | None
    # (reason, handler, error) once a handler canceled it; relation rejections are derived when asked
    _cancel: tuple[str, str | None, BaseException | None] | None

    def __new__(cls, mach: Machine, seq: int, mutation: Mutation, plan: Plan, before: tuple[str, ...],
                time_before: list[int]) -> Transition:
        tx = new_transition(mach, seq, mutation, plan, before, time_before)
        return tx if cls is Transition else _as(cls, tx)

    def __init__(self, mach: Machine, seq: int, mutation: Mutation, plan: Plan, before: tuple[str, ...],
                 time_before: list[int]) -> None:
        """Made by ``__new__``; a subclass's ``__init__`` may call this one (it does nothing)."""

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy and pickle call ``__new__`` with these
        return self._mach, self._seq, self.mutation, self.plan, self._before, self.time_before

    @property
    def id(self) -> str:
        """Unique within the machine: ``<machine id>-<sequence number>``."""
        return f"{self._mach.id}-{self._seq}"

    @property
    def machine(self) -> Machine:
        """The machine being changed."""
        return self._mach

    @property
    def type(self) -> MutationType:
        """ADD, REMOVE or SET."""
        return self.mutation.type

    @property
    def called_states(self) -> list[str]:
        """The states named by the mutation."""
        return list(self.mutation.called)

    @property
    def target_states(self) -> list[str]:
        """The states that will be active if the transition is accepted."""
        return list(self.target)

    @property
    def states_before(self) -> list[str]:
        """The active states when the transition started."""
        return list(self._before)

    @property
    def args(self) -> dict[str, Any]:
        """The mutation's args ({} if none)."""
        a = self.mutation.args
        if a is None:
            a = self.mutation.args = {}
        return a

    @property
    def is_auto(self) -> bool:
        """True for the auto transition that follows a change."""
        return self.mutation.is_auto

    @property
    def is_check(self) -> bool:
        """True for ``can_add``/``can_remove`` dry runs."""
        return self.mutation.is_check

    @property
    def time_after(self) -> list[int]:
        """The clock after the transition (predicted until applied)."""
        if self._time_after is not None:
            return self._time_after
        t = list(self.time_before)
        for i, d in self.plan.deltas:
            t[i] += d
        return t

    @property
    def reason(self) -> str | None:
        """Why the transition was canceled (None while accepted): ``BEnter returned False``, ``CState raised
        RuntimeError: disk full``, ``AState timed out``, or a relation: ``B requires Foo (not active)``,
        ``B removed by A``."""
        if self._cancel is not None:
            return self._cancel[0]
        if self.is_accepted or not self.is_completed:
            return None
        from .resolver import reject_reason

        m = self.mutation
        return reject_reason(self._mach._c, m.type, m.called, self._before, m.is_auto)

    @property
    def handler(self) -> str | None:
        """The handler that canceled the transition, if one did."""
        return self._cancel[1] if self._cancel is not None else None

    @property
    def error(self) -> BaseException | None:
        """The exception of the handler that canceled the transition by raising, if one did."""
        return self._cancel[2] if self._cancel is not None else None

    def __repr__(self) -> str:
        return f"tx#{self.id}\n[{self.mutation.type}] {' '.join(self.mutation.called)}"


def new_transition(mach: Machine, seq: int, mutation: Mutation, plan: Plan, before: tuple[str, ...],
                   time_before: list[int]) -> Transition:
    """A new ``Transition`` (``Transition(...)`` calls this). The transition paths call it directly: a class call
    enters the interpreter afresh from C to run ``__init__``, a function call from Python does not (about 10% of
    making one, and every transition makes one)."""
    tx = _new(Transition)
    tx._mach = mach
    tx._seq = seq
    tx.mutation = mutation
    tx.plan = plan
    tx._before = before
    tx.target = plan.target
    tx.enters = plan.enters
    tx.exits = plan.exits
    tx.time_before = time_before
    tx._time_after = None
    tx.is_accepted = plan.accepted
    tx.is_completed = False
    tx._rejected = None
    tx._cancel = None
    return tx


class Event:
    """What a handler receives: its name, the transition and the mutation's args."""

    __slots__ = ("name", "transition", "_state")

    name: str
    transition: Transition
    _state: str | None

    def __new__(cls, name: str, transition: Transition, state: str | None = None) -> Event:
        e = new_event(name, transition, state)
        return e if cls is Event else _as(cls, e)

    def __init__(self, name: str, transition: Transition, state: str | None = None) -> None:
        """Made by ``__new__``; a subclass's ``__init__`` may call this one (it does nothing)."""

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy and pickle call ``__new__`` with these
        return self.name, self.transition, self._state

    @property
    def machine(self) -> Machine:
        """The machine the handler belongs to."""
        return self.transition._mach

    @property
    def args(self) -> dict[str, Any]:
        """The mutation's args ({} if none); shared by all handlers of the transition."""
        return self.transition.args

    @property
    def mutation(self) -> Mutation:
        """The mutation being applied."""
        return self.transition.mutation

    def is_valid(self) -> bool:
        """True while the transition is the machine's current one, not completed and still accepted."""
        tx = self.transition
        # the public property: on a mirror, ``_mach`` is the mirror object users hold (see machine.mirror)
        return tx._mach.transition is tx and not tx.is_completed and tx.is_accepted

    def __repr__(self) -> str:
        return f"<Event {self.name}>"


def new_event(name: str, transition: Transition, state: str | None = None) -> Event:
    """A new ``Event`` (``Event(...)`` calls this); the handler calls of a transition call it directly, as
    ``new_transition``."""
    e = _new(Event)
    e.name = name
    e.transition = transition
    e._state = state
    return e
