"""One plain remote mutation (``RemoteMachine.add``, ``remove``, ``set``) as one function: the common round trip.

The request engine (``calls.Caller``) serves any number of threads, batches, resends and asyncio callers; a
round trip through it touches far more code and objects than the raw-pyzmq floor's client, and that Python, run
cold after each wait for the reply, is most of what keeps a remote ``add`` above the floor (docs/benchmarks.md).
So the common case is done here, start to end: this thread takes the socket, nothing is queued ahead (no other
thread's calls, no ``add_ns`` batch, no window to wait for), the request is packed and sent, and when the first
message read is its reply, the reply's diff is applied to the mirror at once. Anything else hands the call, sent
already, to the engine (``Caller._run_one``): another message read first (a push, another caller's reply), no
reply within a wait slice (resends, the timeout), the client closed meanwhile. Seqs are taken exactly as the engine
takes them (``_next_seq``, holding ``_io``), so exactly-once and the order of requests are the engine's own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import zmq

from machine import mirror

from . import protocol as P
from .calls import RESEND, WAIT_SLICE, _Call, _error_from, _pack, log
from .errors import TransportError
from .zmqio import NB, raw_send

if TYPE_CHECKING:
    from .remote import RemoteMachine

_OK, _ERR = P.OK, P.ERR


def round_trip(rm: RemoteMachine, kind: str, called: tuple[str, ...], a: dict[str, Any] | None,
               rec_type: str) -> Any:
    """The reply (``[result, update]``) to mutation ``kind`` of ``called`` with args ``a`` on ``rm``'s source,
    the mirror updated; raises as ``Caller._call`` does. None when nothing was sent (the socket taken, something
    queued ahead, no link): then the caller goes the general way. ``rec_type`` names the mutation in the record
    that handlers and ``on_update`` callbacks get."""
    c = rm._client
    io = c._io
    if c._outbox or c._ns_q or not io.acquire(False):
        return None
    handed = False
    try:
        if c._closed or (c._inflight and not c._room()):
            return None
        seq = c._next_seq
        body: dict[str, Any] = {"s": list(called)} if a is None else {"s": list(called), "a": a}
        frame = _pack(kind, seq, rm._id, body)
        try:
            raw_send(c._sock, frame, NB)
        except zmq.ZMQError:  # no link, or the server's queue for us full: the engine waits and retries
            return None
        c._next_seq = seq + 1
        t0 = time.monotonic()
        t = c.timeout
        try:
            data: bytes | None = c._recv_wait(min(WAIT_SLICE, max(1, int(t * 1000))))
        except zmq.Again:
            data = None
        if data is not None:
            c._last_rx = time.monotonic()
            try:
                rkind, rseq, _, reply = P.unpack(data)
            except P.FrameError:
                rkind, rseq, reply = "", 0, None  # the engine's _handle logs it
            if rseq == seq and rkind == _OK:
                if c._outbox:  # other threads' calls queued meanwhile: sent now, as the engine does
                    c._send_outbox(c._last_rx)
                return _apply(rm, reply, kind, called, a, rec_type)
            if rseq == seq and rkind == _ERR:
                raise _error_from(reply)
        # anything else: the engine takes the call over, sent (resent after RESEND, timed out at the timeout)
        call = _Call(seq, kind, rm._id, body, frame, rm._mut_reply_handler(rec_type, called, a))
        call.sent = True
        call.next_try = t0 + RESEND
        c._pending[seq] = call
        c._inflight.append(call)
        handed = True
        try:
            if data is not None:
                c._handle(data)
        except BaseException:  # (a callback's SystemExit, say): the call is given up, as _run_one would
            call.done = True
            c._pending.pop(seq, None)
            c._release()
            raise
        c._run_one(call, max(0.0, t0 + t - time.monotonic()), sent=True)  # gives _io back
        if call.error is not None:
            raise call.error
        return call.result
    finally:
        if not handed:
            c._release()


def _apply(rm: RemoteMachine, reply: Any, kind: str, called: tuple[str, ...], a: dict[str, Any] | None,
           rec_type: str) -> Any:
    """The reply's diff to the mirror, with the mutation's record, as the engine's reply handler applies it
    (``MirrorLink._on_mut_reply``); a reply that can't be applied raises as the engine's reply handlers do."""
    try:
        # the mutation's record only for who reads it (on_update callbacks, a replayed transition's handlers and
        # tracers: _update's slow way); one registered while this call runs may see its step without a record
        rec = ([rec_type, list(called), dict(a or {})] if rm._update_cbs or mirror.has_replay_listeners(rm._m)
               else None)
        rm._on_mut_reply(reply, rec)
    except Exception as exc:
        log.exception("reply handler for %s failed", kind)
        raise TransportError(f"malformed {kind} reply: {exc}", code=P.INTERNAL) from None
    return reply
