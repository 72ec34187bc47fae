"""Client sessions of an endpoint: what each one mirrors, the seqs it has sent, its cached replies and waiters."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from machine import Ctx, Waiter

from .. import protocol as P

MAX_HOLES = 10_000  # seqs below a session's highest one that may still arrive (out of order or retried)


class Sub:
    """One session's view of one machine: what was last sent, so the next update is a diff."""

    __slots__ = ("time", "qtick", "mtick", "muts")

    def __init__(self, time: list[int], qtick: int, mtick: int, muts: bool) -> None:
        self.time = time
        self.qtick = qtick
        self.mtick = mtick
        self.muts = muts


class Session:
    """A connected client, keyed by its socket identity."""

    __slots__ = ("identity", "client_id", "last_seen", "subs", "replies", "args_waiters", "readonly", "user",
                 "top", "holes")

    def __init__(self, identity: bytes, readonly: bool, user: str | None = None) -> None:
        self.user = user  # the client's CURVE public key (z85), None without CURVE
        self.identity = identity
        self.client_id = identity.decode(errors="replace")
        self.last_seen = time.monotonic()
        self.subs: dict[str, Sub] = {}
        self.replies: OrderedDict[int, Any] = OrderedDict()
        # every seq seen: all up to `top` except those in `holes` (sent out of order, or lost on the way)
        self.top = 0
        self.holes: set[int] = set()
        self.args_waiters: dict[Any, tuple[str, Waiter, Ctx]] = {}
        self.readonly = readonly

    def first_time(self, seq: int) -> bool:
        """Record ``seq`` (> 0) as seen; False when it was seen before (a retried request).

        Exact for the last MAX_HOLES seqs; an older one counts as seen. The reply cache keeps only the last
        results, and a retry whose result left it must still never be applied twice."""
        top = self.top
        if seq == top + 1:  # the common case: in order
            self.top = seq
            return True
        if seq > top:
            holes = self.holes
            holes.update(range(max(top + 1, seq - MAX_HOLES), seq))
            self.top = seq
            if len(holes) > MAX_HOLES:  # seqs that never came (heartbeats lost in an outage): forget the oldest
                floor = seq - MAX_HOLES
                self.holes = {h for h in holes if h > floor}
            return True
        if seq in self.holes:
            self.holes.discard(seq)
            return True
        return False

    def remember(self, seq: int, result: int) -> None:
        """Keep a mutation's result for a retry of the same seq (the last REPLY_CACHE of them)."""
        replies = self.replies
        replies[seq] = result
        if len(replies) > P.REPLY_CACHE:
            replies.popitem(last=False)

    def cancel_waiters(self, mach_id: str | None = None) -> None:
        """Cancel this session's ``when_args`` waiters (of one machine, or all)."""
        for token, (mid, _, ctx) in list(self.args_waiters.items()):
            if mach_id is None or mid == mach_id:
                del self.args_waiters[token]
                ctx.cancel()
