"""A fleet's listing in the shell: the machines of every link as sorted entries, made without the cyclic GC going
over 50,000 machines' dicts again and again."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable
from typing import Any

from .link import Entry, Link
from .record import record as dataclass

ONE_SHOT = False  # this process is the ``arpc`` console script (cli.main), which exits after its command


@dataclass
class Status:
    """Machine counts of a session (``status``, the prompt's colour)."""

    connected: int = 0
    connecting: int = 0
    disconnected: int = 0
    total: int = 0


def make_entries(links: Iterable[Link]) -> tuple[list[Entry], dict[Link, int]]:
    """Every machine of the links' listings, sorted by id (an id behind several links: the first link's), and
    how many each link has."""
    seen: dict[str, Entry] = {}
    counts: dict[Link, int] = {}
    for link in links:
        n = len(seen)
        for info in link.infos:
            mid = info.get("id")
            if type(mid) is str and mid not in seen:
                seen[mid] = Entry(link, info)
        counts[link] = len(seen) - n
    return [seen[k] for k in sorted(seen)], counts


def file_infos(file_addrs: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The machines the addr files name (``<id>.addr``), by address, as listing infos of an id alone."""
    out: dict[str, list[dict[str, Any]]] = {}
    sep = os.sep
    for path, addr in file_addrs.items():
        ids = out.get(addr)
        if ids is None:
            ids = out[addr] = []
        ids.append({"id": path[path.rfind(sep) + 1:-5]})  # the name less ".addr" (50,000 of them: no basename)
    return out


def share_names(infos: list[dict[str, Any]]) -> None:
    """Machines of one schema get one list of state names (a daemon's 1000 machines: one list, not 1000), which
    ``list`` then formats once per clock. The lists are read, never changed."""
    seen: dict[tuple[str, ...], list[str]] = {}
    for info in infos:
        names = info.get("states")
        if type(names) is list:
            info["states"] = seen.setdefault(tuple(names), names)


class bulk:  # noqa: N801 - used as a function: ``with bulk(freeze):``
    """No cyclic GC while many objects are made at once (a fleet's listings: 50,000 machines' dicts and entries),
    which would otherwise go over all of them again and again. ``freeze`` in a one-shot command's process (not
    the REPL, not arpc used as a library): every object is then kept out of later collections (``gc.freeze``;
    still freed by reference counting), so the next full collection does not go over the listing once more."""

    def __init__(self, freeze: bool) -> None:
        self.freeze = freeze
        self.was = False

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            if self.freeze and ONE_SHOT:
                gc.freeze()
            gc.enable()
