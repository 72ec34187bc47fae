"""``ns_many``: a client's batch of ``add_ns``, applied in order as that many ``add_ns`` requests would be, minus
the per-message costs (a frame to read and decode, a session lookup, a dispatch) that made up half of a
pipelined mutation's time on the endpoint (docs/benchmarks.md, "where a remote add's time goes").

Each mutation takes the path its own ``add_ns`` would: inline on the I/O thread while its machine is idle and
quick, noted for the watchdog like any inline run; on its machine's lane (behind the requests waiting there, with
the lane's ``limit``) otherwise. An error (an unknown machine or state, a handler that raised, a full lane) is
answered for that mutation alone, with seq 0, and the batch goes on. A malformed batch is refused whole: nothing
of it is applied.

When the watchdog demotes an inline run in the middle of a batch (``leader.py``), the thread running it leaves
the loop; the rest of the batch is in ``rest``, and the new leader runs it right after adopting the demoted run
(``resume``), before reading any other request, so the batch's order and the client's are kept.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

from machine.history import SOURCE

from .. import protocol as P
from ..errors import TransportError
from ..remote import served_busy
from .leader import SLOW, Demoted

if TYPE_CHECKING:
    from .dispatch import Dispatcher
    from .sessions import Session

Entry = tuple[str, list[str], "dict[str, Any] | None"]

MAX_NS_MANY = 1024  # mutations in one batch, at most (a client sends up to nscalls.NS_BATCH, 256)


def entries(body: Any) -> list[Entry]:
    """The batch's mutations, each checked before any is applied (ValueError, or ``limit`` for args too large)."""
    from .dispatch import _args

    if type(body) is not list:
        raise ValueError("ns_many takes a list of [mach, states] or [mach, states, args]")
    if len(body) > MAX_NS_MANY:  # run inline, a batch holds the I/O thread: other sessions wait behind it
        raise TransportError(f"ns_many takes at most {MAX_NS_MANY} mutations, got {len(body)}", code=P.LIMIT)
    out: list[Entry] = []
    for e in body:
        if type(e) is not list or not 2 <= len(e) <= 3:
            raise ValueError("an ns_many entry is [mach, states] or [mach, states, args]")
        mach = e[0]
        if type(mach) is not str or not 0 < len(mach) <= 256:
            raise ValueError("an ns_many entry's mach must be a machine id")
        out.append((mach, P.check_names(e[1]), _args(e[2])[0] if len(e) == 3 else None))
    return out


class NsBatches:
    """The endpoint's ``ns_many`` requests (I/O thread)."""

    def __init__(self, d: Dispatcher) -> None:
        self.d = d
        # the batch being run inline and the index of its next mutation: for the new leader, if this run is demoted
        self.rest: tuple[Session, list[Entry], int] | None = None

    def handle(self, sess: Session, seq: int, body: Any) -> None:
        if seq:
            raise TransportError("ns_many is a notification: its seq must be 0", code=P.INVALID_PARAMS)
        if sess.readonly:
            raise TransportError(f"no access: client {sess.client_id} is read-only", code=P.NO_ACCESS)
        self.run(sess, entries(body), 0)

    def resume(self) -> None:
        """A new leader's: the rest of a batch whose inline run was demoted."""
        rest, self.rest = self.rest, None
        if rest is not None:
            self.run(*rest)

    def run(self, sess: Session, todo: list[Entry], i: int) -> None:
        d = self.d
        machs, loop = d.machs, d.loop
        runs, tickets = loop.inline, loop.tickets
        identity, source = sess.identity, sess.source
        n = len(todo)
        try:
            while i < n:
                mach_id, states, args = todo[i]
                i += 1
                m = machs.get(mach_id)
                if m is None or m.disposed:
                    d._fail(identity, 0, mach_id, P.ADD_NS,
                            TransportError(f"unknown machine: {mach_id}", code=P.UNKNOWN_MACHINE))
                    continue
                if d.lanes or served_busy(m):
                    lane = d._lane_for(m)
                    if lane is not None:  # behind what waits there: as their own add_ns would
                        i = self._to_lane(sess, m, todo, i - 1, lane)
                        continue
                self.rest = (sess, todo, i)
                ticket = next(tickets)
                t0 = perf_counter()
                runs[ticket] = (t0, sess, 0, m, P.ADD_NS)
                err: Exception | None = None
                r = 0
                token = SOURCE.set(source)  # the history names the session
                try:
                    r = int(m.add(*states, args=args))
                except Exception as exc:
                    err = exc
                finally:
                    SOURCE.reset(token)
                if runs.pop(ticket, None) is None:
                    d._demoted(ticket, r if err is None else err)  # raises Demoted: the new leader resumes
                if perf_counter() - t0 > SLOW:
                    d.mark_slow(m)
                if err is not None:
                    d._fail(identity, 0, m.id, P.ADD_NS, err)
        except Demoted:
            raise
        except BaseException:
            self.rest = None
            raise
        self.rest = None

    def _to_lane(self, sess: Session, m: Any, todo: list[Entry], i: int, lane: Any) -> int:
        """Hand the batch's run of mutations for ``m`` from ``i`` on to its lane as one job (in order, behind
        what waits there); returns where the run ends. Past the lane's bound the rest get ``limit``, as their
        own add_ns would."""
        from .dispatch import MAX_LANE_NS

        d = self.d
        j = i + 1
        while j < len(todo) and todo[j][0] == m.id:
            j += 1
        room = max(0, MAX_LANE_NS - lane.outstanding)
        run = todo[i:min(j, i + room)]
        for _ in range(j - i - len(run)):
            d._fail(sess.identity, 0, m.id, P.ADD_NS, TransportError(
                f"machine {m.id} has {lane.outstanding} requests waiting; try again later", code=P.LIMIT))
        if not run:
            return j
        source = sess.source

        def apply() -> list[Exception]:
            errors: list[Exception] = []
            token = SOURCE.set(source)
            try:
                for _, states, args in run:
                    try:
                        m.add(*states, args=args)
                    except Exception as exc:
                        errors.append(exc)
            finally:
                SOURCE.reset(token)
            return errors

        def answer(errors: list[Exception] | Exception) -> None:
            for exc in errors if isinstance(errors, list) else [errors]:
                d._fail(sess.identity, 0, m.id, P.ADD_NS, exc)

        d._hand_off(sess, 0, lane, apply, answer, bounded=False, n=len(run))
        return j
