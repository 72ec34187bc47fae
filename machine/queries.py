"""``StateQueries``, the base of ``Machine`` that reads its state: checks (``is_active``, ``is_time``, ...) and
getters (``active_states``, ``tick``, ``time``, ``clock``, ...). None takes the lock: a clock is replaced on
change, never written in place, so one that reads the clock once sees one whole clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .log import LogLevel
from .schema import EXCEPTION

if TYPE_CHECKING:
    from .schema import Compiled


class StateQueries:
    """Checks and getters over a machine's clock (see the module docstring); ``Machine`` sets the slots below."""

    __slots__ = ()

    _c: Compiled
    _time: list[int]
    _disposed: bool

    if TYPE_CHECKING:  # on Machine
        def _log(self, level: int, msg: str) -> None: ...
        def _check_names(self, states: Iterable[str]) -> None: ...

    # ------------------------------------------------------------------ checks

    def is_active(self, *states: str) -> bool:
        """True when all of ``states`` are active (lenient: an unknown state is inactive)."""
        index, t = self._c.index, self._time
        for s in states:
            i = index.get(s)
            if i is None:
                self._log(LogLevel.EVERYTHING, f"[is] state {s} not found")
                return False
            if not t[i] & 1:
                return False
        return True

    def any_active(self, *states: str) -> bool:
        """True when at least one of ``states`` is active."""
        index, t = self._c.index, self._time
        for s in states:
            i = index.get(s)
            if i is not None and t[i] & 1:
                return True
        return False

    def not_active(self, *states: str) -> bool:
        """True when none of ``states`` is active. Raises StateError for unknown states."""
        self._check_names(states)
        index, t = self._c.index, self._time
        return not any(t[index[s]] & 1 for s in states)

    def has(self, *states: str) -> bool:
        """True when all of ``states`` are in the schema."""
        return all(s in self._c.index for s in states)

    def is_err(self) -> bool:
        """True while Exception is active."""
        return self.is_active(EXCEPTION)

    def is_time(self, time: Iterable[int], states: Iterable[str] | None = None) -> bool:
        """True when the ticks of ``states`` (default: all, in index order) equal ``time``."""
        return self._cmp_time(time, states, exact=True)

    def was_time(self, time: Iterable[int], states: Iterable[str] | None = None) -> bool:
        """True when each tick of ``states`` is >= the matching value of ``time``."""
        return self._cmp_time(time, states, exact=False)

    def _cmp_time(self, time: Iterable[int], states: Iterable[str] | None, exact: bool) -> bool:
        names = list(states) if states is not None else list(self._c.names)
        self._check_names(names)
        want, have = list(time), self.time(*names)
        return len(want) == len(names) and (have == want if exact else all(map(int.__ge__, have, want)))

    def is_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every state's tick equals ``clock[state]``."""
        return all(self.tick(s) == v for s, v in clock.items())

    def was_clock(self, clock: Mapping[str, int]) -> bool:
        """True when every state's tick is >= ``clock[state]``."""
        return all(self.tick(s) >= v for s, v in clock.items())

    # ------------------------------------------------------------------ getters

    def active_states(self, *states: str) -> list[str]:
        """Active states in index order, optionally only those among ``states``."""
        self._check_names(states)
        t, names = self._time, self._c.names
        if states:
            index = self._c.index
            return [s for s in sorted(set(states), key=index.__getitem__) if t[index[s]] & 1]
        return [n for i, n in enumerate(names) if t[i] & 1]

    def tick(self, state: str) -> int:
        """The state's tick (odd = active); 0 for an unknown state."""
        i = self._c.index.get(state)
        return 0 if i is None else self._time[i]

    def time(self, *states: str) -> list[int]:
        """Ticks of ``states`` (default: all, in index order)."""
        if self._disposed:
            return []
        t = self._time
        if not states:
            return list(t)
        self._check_names(states)
        index = self._c.index
        return [t[index[s]] for s in states]

    def clock(self, *states: str) -> dict[str, int]:
        """``{state: tick}`` for ``states`` (default: all)."""
        if self._disposed:
            return {}
        names = states or self._c.names
        self._check_names(names)
        t, index = self._time, self._c.index
        return {s: t[index[s]] for s in names}

    def index(self, state: str) -> int:
        """The state's position in the schema; -1 when unknown."""
        return self._c.index.get(state, -1)

    def switch(self, *states: str) -> str | None:
        """The first of ``states`` that is active, or None."""
        self._check_names(states)
        t, index = self._time, self._c.index
        for s in states:
            if t[index[s]] & 1:
                return s
        return None

    def __str__(self) -> str:
        if self._disposed:
            return ""
        t = self._time
        return "(" + " ".join(f"{n}:{t[i]}" for i, n in enumerate(self._c.names) if t[i] & 1) + ")"
