"""The client side of the requests about many machines at once (``server/fleet.py``): ``group`` (one mutation of
many machines, one request per endpoint) and ``watch`` (an endpoint-wide stream of transition records), shared by
the sync ``Client`` and the ``AsyncClient``."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import protocol as P
from .errors import TransportError

if TYPE_CHECKING:
    from .calls import _Call
    from .client import Client

_KINDS = {"add": P.ADD, "remove": P.REMOVE, "set": P.SET}
UNSUPPORTED = "unsupported"  # client-side code: the server predates these requests


class TransitionRecord(NamedTuple):
    """One accepted transition of a watched machine: its id, its clock before and after (index order), the
    source's wall time (ms), the mutation's type (``add``, ``remove``, ``set``...), called states and args (None
    when none, or not asked for)."""

    machine: str
    before: list[int]
    after: list[int]
    at_ms: int
    type: str
    called: list[str]
    args: dict[str, Any] | None


WatchFn = Callable[[list[TransitionRecord], int], Any]


def unknown_kind(exc: BaseException | None) -> bool:
    """True for the error an older server answers a request kind it does not know with."""
    return (isinstance(exc, TransportError) and exc.code == P.INVALID_PARAMS
            and str(exc).startswith("unknown message kind"))


def group_calls(cl: Client, kind: str, states: Sequence[str], ids: Sequence[str],
                args: dict[str, Any] | None) -> list[_Call]:
    """The ``group`` requests of one mutation of ``ids`` (``MAX_GROUP`` machines a request), consecutive seqs."""
    wire = _KINDS.get(kind)
    if wire is None:
        raise ValueError(f"unknown mutation {kind!r} (add, remove or set)")
    calls: list[_Call] = []
    seq = cl._next_seq
    ids = list(ids)
    for k in range(0, len(ids), P.MAX_GROUP):
        body: dict[str, Any] = {"k": wire, "s": list(states), "ids": ids[k:k + P.MAX_GROUP]}
        if args:
            body["a"] = dict(args)
        calls.append(cl._new_call(P.GROUP, None, body, None, seq + len(calls)))
    return calls


def group_results(ids: Sequence[str], calls: list[_Call]) -> list[int | BaseException] | None:
    """Each machine's result (a ``Result`` or a queue tick) or error, in the order of ``ids``; None when the
    server does not know ``group`` (the caller falls back to one request a machine). Raises the error of a call
    that failed as a whole (a timeout, ``no_access``, a bad request)."""
    from machine import Result

    from .calls import _error_from

    out: list[int | BaseException] = []
    k = 0
    for c in calls:
        if c.error is not None:
            if unknown_kind(c.error):
                return None
            raise c.error
        body = c.result
        chunk = ids[k:k + P.MAX_GROUP]
        k += len(chunk)
        rs, errs = (body.get("r"), body.get("e")) if isinstance(body, dict) else (None, None)
        if not isinstance(rs, list) or not isinstance(errs, dict):
            raise TransportError("malformed group reply", code=P.INTERNAL)
        # the server answers each machine once, in the order of the ids it applied (duplicates dropped)
        by_id = dict(zip(dict.fromkeys(chunk), rs, strict=False))
        for mid in chunk:
            e = errs.get(mid)
            if e is not None:
                out.append(_error_from(e))
                continue
            r = by_id.get(mid)
            if not isinstance(r, int) or r < 0:
                out.append(TransportError(f"no result for machine {mid}", code=P.INTERNAL))
            else:
                out.append(Result(r) if r < Result.QUEUED else r)
    return out


def many_ops(kind: str, states: Sequence[str], ids: Sequence[str],
             args: dict[str, Any] | None) -> list[tuple[str, str, tuple[str, ...] | list[str], dict[str, Any] | None]]:
    """The same mutation as ``mutate_many`` ops (for a server without ``group``)."""
    return [(mid, kind, list(states), args) for mid in ids]


class Watches:
    """A client's watches: the callbacks and their selections; the server gets their union (one per client)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subs: dict[int, tuple[WatchFn, frozenset[str] | None, bool]] = {}
        self.next = 0
        self.names: dict[str, list[str]] = {}  # state names of watched machines, as the server sent them

    def add(self, fn: WatchFn, ids: Sequence[str] | None, args: bool) -> int:
        with self.lock:
            self.next += 1
            self.subs[self.next] = (fn, None if ids is None else frozenset(ids), args)
            return self.next

    def remove(self, key: int) -> bool:
        """Forget a watch; True when it was the last one."""
        with self.lock:
            self.subs.pop(key, None)
            return not self.subs

    def body(self) -> dict[str, Any] | None:
        """The ``watch`` request covering every watch (None: none left)."""
        with self.lock:
            subs = list(self.subs.values())
        if not subs:
            return None
        ids: set[str] | None = set()
        for _, sel, _ in subs:
            if sel is None:
                ids = None
                break
            assert ids is not None
            ids |= sel
        return {"ids": None if ids is None else sorted(ids), "a": any(a for _, _, a in subs)}

    def deliver(self, body: Any) -> None:
        """A ``wrec`` push: its records to each watch (those of its machines), with the count of records the
        server dropped for this client since its last push."""
        if not isinstance(body, dict) or not isinstance(body.get("r"), list):
            return
        dropped = body.get("d")
        dropped = dropped if type(dropped) is int and dropped > 0 else 0
        names, idx = body.get("names"), body.get("m")
        if isinstance(names, list) and isinstance(idx, dict):  # before the records: their callbacks may ask
            for mid, k in idx.items():
                if type(mid) is str and type(k) is int and 0 <= k < len(names) and isinstance(names[k], list):
                    self.names[mid] = names[k]
        recs = []
        for r in body["r"]:
            if type(r) is list and len(r) == 7 and type(r[0]) is str:
                recs.append(TransitionRecord(*r))
        with self.lock:
            subs = list(self.subs.values())
        for fn, sel, _ in subs:
            mine = recs if sel is None else [r for r in recs if r.machine in sel]
            if mine or dropped:
                try:
                    fn(mine, dropped)
                except Exception:  # noqa: BLE001 - a watcher's bug must not stop the client's I/O
                    from machine.log import LazyLogger

                    LazyLogger("transport.client").exception("watch callback failed")


def watched_names(cl: Any, mach_id: str) -> list[str] | None:
    """The state names (index order) of a machine ``cl`` watches, as the server sent them with its first records;
    None before its first record, or from a server that does not send them (ask for a listing then)."""
    watches = getattr(cl, "_watches", None)
    return watches.names.get(mach_id) if isinstance(watches, Watches) else None


def listing(body: Any) -> list[dict[str, Any]]:
    """The machines of a ``machs`` reply, as ``Client.machines()`` gives them: the reply's list, or the list made
    of a compact one's columns (a server that knows ``{c: true}``). ValueError on a malformed reply."""
    if isinstance(body, list):
        return body
    if not isinstance(body, dict):
        raise ValueError("machs reply: not a list or a map")
    ids, times, sidx, names, args = body["ids"], body["t"], body["s"], body["names"], body["args"]
    pidx, parents, gidx, tags = body["p"], body["parents"], body["g"], body["tags"]
    n = len(ids)
    if not (len(times) == len(sidx) == len(pidx) == len(gidx) == n) or len(args) != len(names):
        raise ValueError("machs reply: columns of different lengths")
    out: list[dict[str, Any]] = []
    for i in range(n):
        k = sidx[i]
        d = {"id": ids[i], "parent_id": parents[pidx[i]], "tags": list(tags[gidx[i]]), "time": times[i],
             "states": list(names[k])}
        if args[k]:
            d["args"] = args[k]
        out.append(d)
    return out
