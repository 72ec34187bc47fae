"""Client sessions of an endpoint: what each one mirrors, the seqs it has sent, its cached replies and waiters."""

from __future__ import annotations

import os
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import zmq

from machine import Ctx, Waiter

from .. import protocol as P

MAX_GAPS = 256  # ranges of seqs skipped by a session that are still told apart from seen ones


class Sub:
    """One session's view of one machine: what was last sent, so the next update is a diff."""

    __slots__ = ("time", "qtick", "mtick", "muts")

    def __init__(self, time: list[int], qtick: int, mtick: int, muts: bool) -> None:
        self.time = time
        self.qtick = qtick
        self.mtick = mtick
        self.muts = muts


class SeqRecord:
    """Every seq a session has sent: all up to ``top``, except the gaps (seqs skipped so far: sent out of order
    by another thread, still on the way, or lost), kept as at most MAX_GAPS ranges.

    Memory and time per seq depend on the number of gaps, never on the seq values: a first seq of 10**9 is one
    gap, as is a jump of any size. When a new gap would pass MAX_GAPS, the oldest is forgotten and every seq up to
    its end counts as ``forgotten`` (seen or not, the record can no longer tell)."""

    __slots__ = ("top", "floor", "gaps")

    def __init__(self) -> None:
        self.top = 0
        self.floor = 0  # seqs up to here are forgotten
        self.gaps = array("q")  # [lo, hi, lo, hi, ...], ascending, inclusive, all in (floor, top)

    def first_time(self, seq: int) -> bool:
        """Record ``seq`` (> 0) as seen; False when it was seen before (a retry) or is forgotten."""
        top = self.top
        if seq == top + 1:  # the common case: in order
            self.top = seq
            return True
        gaps = self.gaps
        if seq > top:
            gaps.append(top + 1)
            gaps.append(seq - 1)
            self.top = seq
            if len(gaps) > 2 * MAX_GAPS:  # seqs that never came (heartbeats lost in an outage): forget the oldest
                self.floor = gaps[1]
                del gaps[:2]
            return True
        i = bisect_left(gaps, seq)  # the first bound >= seq: inside a gap when it is its end, or its start
        if i & 1:
            hi = gaps[i]  # gaps[i - 1] < seq: inside
            if seq == hi:
                gaps[i] = hi - 1
            else:  # lo < seq < hi: split the gap
                gaps[i:i] = array("q", (seq - 1, seq + 1))
                if len(gaps) > 2 * MAX_GAPS:
                    self.floor = gaps[1]
                    del gaps[:2]
            return True
        if i < len(gaps) and gaps[i] == seq:
            if gaps[i + 1] == seq:
                del gaps[i:i + 2]
            else:
                gaps[i] = seq + 1
            return True
        return False

    def forgotten(self, seq: int) -> bool:
        """True when ``seq`` is too old for the record to tell whether it was seen."""
        return seq <= self.floor


class Backlog:
    """The pushes with mutation records sent to one client that libzmq still holds (its socket has not taken
    them: the client does not read), and their bytes."""

    __slots__ = ("sent", "bytes")

    def __init__(self) -> None:
        self.sent: deque[tuple[zmq.MessageTracker, int]] = deque()
        self.bytes = 0

    def add(self, tracker: zmq.MessageTracker, size: int) -> None:
        self.sent.append((tracker, size))
        self.bytes += size

    def pending(self) -> int:
        """The bytes still held, once those delivered are forgotten (in order: one client's messages leave in
        the order they were queued)."""
        sent = self.sent
        while sent and sent[0][0].done:
            self.bytes -= sent.popleft()[1]
        return self.bytes


class Session:
    """A connected client, keyed by its socket identity."""

    __slots__ = ("identity", "client_id", "last_seen", "subs", "replies", "args_waiters", "args_bytes", "readonly",
                 "user", "seqs", "backlog", "greeted", "checks", "token", "follows", "source", "inflight",
                 "args_pending", "group_replies", "group_bytes")

    def __init__(self, identity: bytes, readonly: bool, user: str | None = None) -> None:
        self.user = user  # the client's CURVE public key (z85), None without CURVE
        self.identity = identity
        self.client_id = identity.decode(errors="replace")
        self.source = f"session {self.client_id}"  # what the history of a machine names as a mutation's source
        self.last_seen = time.monotonic()
        self.subs: dict[str, Sub] = {}
        self.replies: OrderedDict[int, Any] = OrderedDict()
        # the last replies to its fleet ``group`` requests (seq -> frame), for retries, and their bytes (fleet.py)
        self.group_replies: OrderedDict[int, bytes] | None = None
        self.group_bytes = 0
        self.inflight: set[int] = set()  # seqs of mutations waiting on a machine's lane: not applied, not answered
        self.seqs = SeqRecord()
        self.backlog = Backlog()
        self.checks = 0  # dry runs in progress on the endpoint's workers
        self.greeted = False  # it said hello: a session made by any other request is one the client lost
        self.args_waiters: dict[Any, tuple[str, Waiter, Ctx, int]] = {}  # token -> (machine, waiter, ctx, bytes)
        # when_args requests still on a machine's lane, not registered yet: token -> (machine, bytes). They count
        # against the session's limits (of waiters and of bytes) from the moment they are accepted
        self.args_pending: dict[Any, tuple[str, int]] = {}
        self.args_bytes = 0  # the packed args of those waiters and of the pending ones, in all
        self.readonly = readonly
        self.token = os.urandom(4).hex()  # in hello and ping replies: a client seeing another knows it was forgotten
        self.follows: dict[str, Callable[[], None]] = {}  # machine id -> stop following its history

    def remember(self, seq: int, result: int) -> None:
        """Keep a mutation's result for a retry of the same seq (the last REPLY_CACHE of them)."""
        replies = self.replies
        replies[seq] = result
        if len(replies) > P.REPLY_CACHE:
            replies.popitem(last=False)

    def add_waiter(self, token: Any, mach_id: str, w: Waiter, ctx: Ctx, size: int) -> None:
        self.args_waiters[token] = (mach_id, w, ctx, size)
        self.args_bytes += size

    def pop_waiter(self, token: Any) -> tuple[str, Waiter, Ctx, int] | None:
        entry = self.args_waiters.pop(token, None)
        if entry is not None:
            self.args_bytes -= entry[3]
        return entry

    def reserve(self, token: Any, mach_id: str, size: int) -> None:
        """A when_args accepted and handed to a machine's lane: counted now, registered later."""
        self.args_pending[token] = (mach_id, size)
        self.args_bytes += size

    def unreserve(self, token: Any) -> bool:
        """Forget a pending when_args; False when it is not pending (cancelled meanwhile, or never was)."""
        entry = self.args_pending.pop(token, None)
        if entry is None:
            return False
        self.args_bytes -= entry[1]
        return True

    def cancel_waiters(self, mach_id: str | None = None) -> None:
        """Cancel this session's ``when_args`` waiters and history follows (of one machine, or all)."""
        for mid in list(self.follows) if mach_id is None else [mach_id]:
            stop = self.follows.pop(mid, None)
            if stop is not None:
                stop()
        for token, (mid, _, ctx, _) in list(self.args_waiters.items()):
            if mach_id is None or mid == mach_id:
                self.pop_waiter(token)
                ctx.cancel()
        for token, (mid, _) in list(self.args_pending.items()):
            if mach_id is None or mid == mach_id:
                self.unreserve(token)  # its registration, when its turn comes, is cancelled at once
