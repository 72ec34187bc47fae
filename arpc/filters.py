"""The listing filters of ``list``, ``group-*`` and ``watch``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import cast

from .errors import Failed, UsageError
from .link import Entry
from .record import record as dataclass


@dataclass
class Filters:
    """Listing filters of ``list``, ``group-*`` and ``watch`` (spec 3.3; ``-m`` is honoured)."""

    active: tuple[str, ...] = ()
    inactive: tuple[str, ...] = ()
    mtime_states: tuple[str, ...] = ()
    mtime_min: int | None = None
    mtime_max: int | None = None
    parent: str | None = None
    id_regexp: str | None = None
    id_partial: str | None = None
    id_prefix: str | None = None
    id_suffix: str | None = None
    limit: int | None = None
    skip: int = 0  # -f/--from: skip the first N machines of the listing
    disconn: bool = True

    def apply(self, entries: Sequence[Entry]) -> list[Entry]:
        if self == Filters(skip=self.skip):  # no filter (a fleet's plain list): no test per machine
            return list(entries[self.skip:])
        rx = None
        if self.id_regexp is not None:
            try:
                rx = re.compile(self.id_regexp)
            except re.error as err:
                raise UsageError(f"invalid regexp: {self.id_regexp}: {err}") from None
        out: list[Entry] = []
        for e in entries[self.skip:]:
            if rx is not None and not rx.search(e.id):
                continue
            if self.id_partial is not None and self.id_partial not in e.id:
                continue
            if self.id_prefix is not None and not e.id.startswith(self.id_prefix):
                continue
            if self.id_suffix is not None and not e.id.endswith(self.id_suffix):
                continue
            if self.parent is not None and e.parent_id != self.parent:
                continue
            if not self.disconn and not e.connected:
                continue
            if self.active or self.inactive or self.mtime_min is not None or self.mtime_max is not None:
                clock = e.clock()
                if any(not clock.get(s, 0) & 1 for s in self.active):
                    continue
                if any(s not in clock or clock[s] & 1 for s in self.inactive):
                    continue
                if self.mtime_min is not None or self.mtime_max is not None:
                    states = self.mtime_states or tuple(clock)
                    mtime = sum(clock.get(s, 0) for s in states)
                    if self.mtime_min is not None and mtime < self.mtime_min:
                        continue
                    if self.mtime_max is not None and mtime > self.mtime_max:
                        continue
            out.append(e)
            if self.limit and len(out) >= self.limit:
                break
        return out

    def by_id_only(self) -> bool:
        """Only id filters (or none): the ids alone tell the matching machines, in any order."""
        return self == Filters(id_regexp=self.id_regexp, id_partial=self.id_partial, id_prefix=self.id_prefix,
                               id_suffix=self.id_suffix)

    def ids(self, ids: list[str]) -> list[str]:
        """The ``ids`` the id filters let through (``by_id_only`` filters: no listing needed)."""
        if self.id_regexp is None and self.id_partial is None and self.id_prefix is None and self.id_suffix is None:
            return ids
        return [e.id for e in self.apply(cast("list[Entry]", [_Id(i) for i in ids]))]

    def check_states(self, entries: Sequence[Entry]) -> None:
        """A state in -a/-i/-m that no machine has is a typo, not an empty result."""
        wanted = dict.fromkeys((*self.active, *self.inactive, *self.mtime_states))
        if not wanted or not entries:
            return
        known: set[str] = set()
        for e in entries:
            known.update(e.names)
        unknown = [s for s in wanted if s not in known]
        if unknown:
            word = "state" if len(unknown) == 1 else "states"
            raise Failed(f"unknown {word} in a filter: {' '.join(unknown)} (no machine has it)")


class _Id:
    """An id as ``Filters.apply`` reads an entry, when only id filters apply."""

    __slots__ = ("id",)

    def __init__(self, mid: str) -> None:
        self.id = mid
