"""The endpoint's I/O thread: it owns the ROUTER socket, reads requests in batches, runs posted tasks, flushes
pushes, and drops silent sessions. Which thread that is can change: see ``leader.py``."""

from __future__ import annotations

import itertools
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import zmq

from machine.log import LazyLogger

from .. import protocol as P
from ..zmqio import EVENTS, MORE_NB, NB, POLLIN, WakePipe, raw_send
from .leader import DOG, QUIET, Demoted
from .sessions import Backlog, Session

if TYPE_CHECKING:
    from machine import Machine

    from .dispatch import Dispatcher
    from .pushes import Pushes

log = LazyLogger("transport.server")

MAX_ERR_MSG = 1000  # characters of an error reply's message
BATCH = 1000  # requests read before the pushes are flushed, so one busy client can't starve the rest


InlineRun = tuple[float, Session, int, "Machine", str]  # (started, session, seq, machine, kind)


class ServerLoop:
    """Everything the I/O thread does with the socket. Only ``post``, ``wake`` and ``stop`` are for other
    threads (and ``inline``/``demote`` for the watchdog)."""

    def __init__(self, sock: zmq.Socket[Any], curve: bool, readonly_keys: set[bytes],
                 on_exit: Callable[[], None], name: str = "am-endpoint") -> None:
        self.sock = sock
        self.curve = curve
        self.readonly_keys = readonly_keys
        self.on_exit = on_exit  # closes the socket and its context, on the I/O thread once it is done
        self.sessions: dict[bytes, Session] = {}
        self.backlogs: dict[bytes, Backlog] = {}  # of dropped sessions, while libzmq still holds some of it
        self.tasks: deque[Callable[[], None]] = deque()
        self.pipe = WakePipe()
        self.stopped = False
        self.ident = 0  # the I/O thread's id, once it runs (it changes when a slow inline run is demoted)
        self.native_id = 0  # and its kernel thread id (the watchdog reads its scheduling stats)
        self.name = name
        # leader/followers (leader.py): the inline run in progress (at most one: the leader's), by ticket; the
        # lock of a hand-over; and the runs demoted that the next leader adopts before it polls
        self.inline: dict[int, InlineRun] = {}
        self.tickets = itertools.count(1)
        self.lead = threading.Lock()
        self.handover: list[tuple[int, InlineRun]] = []
        self.watched = False  # the watchdog looks at this loop (written under its lock, by the leader)
        self.idle_since = 0.0  # when the leader began to wait in poll (0.0: it is not waiting)
        self.exited = threading.Event()  # the last leader has closed the socket
        self.epoll: select.epoll | None = None
        self.next_sweep = 0.0
        self.sent = 0  # messages sent (so the thread knows when to look at the socket again)
        self.errors = 0  # malformed or refused requests answered with an error
        self.handled = 0  # requests handled
        # for metrics: requests by kind (only the protocol's kinds: a peer's made-up kinds count as "other"),
        # frames that could not be decoded, bytes in and out
        self.kinds: dict[str, int] = {}
        self.bad_frames = 0
        self.bytes_in = 0
        self.bytes_out = 0
        # set by the endpoint once it has made them (they need the loop)
        self.dispatcher: Dispatcher
        self.pushes: Pushes

    # ------------------------------------------------------------------ any thread

    def wake(self) -> None:
        self.pipe.wake()

    def post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the I/O thread, after the current batch."""
        self.tasks.append(fn)
        if not self.exited.is_set():  # (after the exit the pipe is closed: its fd may be someone else's)
            self.pipe.wake()

    def demote(self, ticket: int) -> bool:
        """The watchdog's: leave the inline run ``ticket`` to the thread running it and start a new leader.
        False when the run has ended meanwhile (or the loop stops)."""
        with self.lead:
            if self.stopped:
                return False
            run = self.inline.pop(ticket, None)
            if run is None:
                return False  # the leader popped it first: it is done and still the leader
            self.handover.append((ticket, run))
            try:
                threading.Thread(target=self.run, name=self.name, daemon=True).start()
            except BaseException:
                self.handover.pop()
                self.inline[ticket] = run  # the run's thread stays the leader
                raise
            return True

    # ------------------------------------------------------------------ the I/O thread

    def run(self) -> None:
        """The I/O thread's loop; a new leader runs it too, after adopting the runs demoted (``leader.py``)."""
        self.ident = threading.get_ident()
        self.native_id = threading.get_native_id()
        sock = self.sock
        getsockopt: Callable[[int], int] = sock.getsockopt  # type: ignore[assignment]  # EVENTS is an int
        recv = sock.recv
        curve = self.curve
        pushes = self.pushes
        tasks = self.tasks
        wake_r = self.pipe.fd
        demoted = False
        quiet = 0  # waits in a row that timed out with nothing to do
        try:
            with self.lead:
                taken, self.handover = self.handover, []
            for ticket, run in taken:  # before any request: later ones for that machine queue behind it
                self.dispatcher.adopt(ticket, run)
            if taken:
                self.dispatcher.resume()  # what followed a demoted run in its ns_many batch, still before any request
            ep = self.epoll
            if ep is None:
                # an epoll over the socket's fd (level-triggered: readable while libzmq has commands to process)
                # and the wake pipe: one syscall per wait, where zmq.Poller makes three or four. Inside the try:
                # if it cannot be made (no fds left), the socket is still closed below
                ep = self.epoll = select.epoll()
                ep.register(cast(int, sock.getsockopt(zmq.FD)), select.EPOLLIN)
                ep.register(wake_r, select.EPOLLIN)
                self.next_sweep = time.monotonic() + 1.0
            while not self.stopped:
                n = 0
                # a batch, then pushes. Asking EVENTS also processes libzmq's pending commands, which is what
                # empties the fd before the wait below
                while n < BATCH and getsockopt(EVENTS) & POLLIN:  # cheaper than catching Again
                    n += 1
                    if not self.watched:  # before the request: an inline run may need the watchdog
                        DOG.watch(self)
                    if curve:  # the client's key (User-Id) decides its session and its rights
                        frames = sock.recv_multipart(NB, copy=False)
                        user = frames[-1].get("User-Id")
                        self.handle([f.bytes for f in frames], user if isinstance(user, str) else None)
                        continue
                    identity = recv(NB)
                    frame = recv(NB, copy=False)  # a Frame says whether more parts follow: no RCVMORE asked
                    if frame.more:
                        self.handle([identity, frame.bytes, *sock.recv_multipart(NB)])
                    else:
                        self.request(identity, frame.bytes, None)
                sent = self.sent
                while tasks:
                    fn = tasks.popleft()
                    try:
                        fn()
                    except Exception:
                        log.exception("endpoint task failed")
                if pushes.later:
                    pushes.dirty.update(pushes.later)
                if pushes.dirty:
                    pushes.flush()
                now = time.monotonic()
                if now >= self.next_sweep:
                    self.next_sweep = now + 1.0
                    self.sweep(now)
                if n == BATCH or self.sent != sent or tasks or pushes.dirty:
                    # look at the socket again first: a send processes libzmq's commands too, and may have taken
                    # the fd's signal for a request that arrived meanwhile
                    quiet = 0
                    continue
                timeout = 0.001 if pushes.later else 0.5
                self.idle_since = time.perf_counter()  # no inline run while in poll: the watchdog may nap
                events = ep.poll(timeout)
                self.idle_since = 0.0
                if DOG.napping:  # (also after a timeout: requests may be read without an event)
                    DOG.nudge()
                for fd, _ in events:
                    if fd == wake_r:
                        self.pipe.drain()
                if events or n:
                    quiet = 0
                elif self.watched:
                    quiet += 1
                    if quiet * timeout >= QUIET:
                        DOG.unwatch(self)  # idle: no wake-ups for it until its next request
        except Demoted:
            demoted = True  # this thread ran a slow transition; the sockets and all else are the new leader's
        except Exception:
            log.exception("endpoint crashed")
        finally:
            if not demoted:
                self._exit()

    def _exit(self) -> None:
        try:
            DOG.unwatch(self)
            for sess in list(self.sessions.values()):
                self.drop_session(sess)
            if self.epoll is not None:
                self.epoll.close()
            self.on_exit()
        finally:
            self.exited.set()

    def send(self, sess: Session, frame: bytes) -> bool:
        """Queue one message for a session, never blocking; False when it was dropped."""
        try:
            # two sends with plain int flags: send_multipart costs twice as much for its generality
            sock = self.sock
            self.sent += 1
            raw_send(sock, sess.identity, MORE_NB)
            raw_send(sock, frame, NB)
            self.bytes_out += len(frame)
            return True
        except zmq.Again:
            # the client is not reading: drop this message; its next update fails the checksum -> sync
            return False
        except zmq.ZMQError:
            self.drop_session(sess)
            return False

    def send_tracked(self, sess: Session, frame: bytes) -> bool:
        """``send`` for a large push: counted in the session's backlog until libzmq has handed it to the
        kernel. The bytes are not copied: every session sent the same frame shares them."""
        try:
            self.sent += 1
            raw_send(self.sock, sess.identity, MORE_NB)
            tracker = self.sock.send(zmq.Frame(frame, track=True), NB, copy=False, track=True)
        except zmq.Again:
            return False
        except zmq.ZMQError:
            self.drop_session(sess)
            return False
        sess.backlog.add(tracker, len(frame))
        self.bytes_out += len(frame)
        return True

    def reply_err(self, identity: bytes, seq: int, mach: str | None, code: str, msg: str,
                  type_name: str = "TransportError", extra: dict[str, Any] | None = None) -> None:
        self.errors += 1
        # an error's text may quote what the peer sent, megabytes of it: clipped
        body: dict[str, Any] = {"type": type_name, "msg": P.clip(msg, MAX_ERR_MSG), "code": code}
        if extra:
            body.update(extra)
        try:
            self.sent += 1
            self.sock.send_multipart([identity, P.pack(P.ERR, seq, mach, body)], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def handle(self, parts: list[bytes], user: str | None = None) -> None:
        """A message as ROUTER gives it: the identity, then (we expect) exactly one frame."""
        if len(parts) != 2:
            identity = parts[0] if parts else b""
            log.warning("dropped a message of %d parts from %r", len(parts), identity[:32])
            if identity:
                self.reply_err(identity, 0, None, P.INVALID_PARAMS, "a message is exactly one frame")
            return
        self.request(parts[0], parts[1], user)

    def request(self, identity: bytes, data: bytes, user: str | None) -> None:
        """One request: a client's identity and its one frame."""
        self.bytes_in += len(data)
        try:
            kind, seq, mach_id, body = P.unpack(data)
        except P.FrameError as exc:
            self.bad_frames += 1
            log.warning("bad frame from %r: %s", identity[:32], P.clip(str(exc)))
            self.reply_err(identity, exc.seq, exc.mach, exc.code, str(exc))
            return
        sess = self.sessions.get(identity)
        if sess is not None and sess.user != user:
            # another key took over this identity (ROUTER_HANDOVER): it gets nothing of the old session
            self.drop_session(sess)
            sess = None
        if sess is None:
            readonly = user is not None and user.encode() in self.readonly_keys
            sess = self.sessions[identity] = Session(identity, readonly, user)
            backlog = self.backlogs.pop(identity, None)
            if backlog is not None:  # what libzmq still holds for this peer counts against the new session too
                sess.backlog = backlog
        sess.last_seen = time.monotonic()
        self.handled += 1
        k = kind if kind in P.REQUESTS else "other"
        self.kinds[k] = self.kinds.get(k, 0) + 1
        # every request's seq is recorded, whatever its kind or fate: only a mutation is refused when retried
        self.dispatcher.request(sess, kind, seq, mach_id, body, sess.seqs.first_time(seq) if seq else True)

    def drop_session(self, sess: Session) -> None:
        if self.sessions.pop(sess.identity, None) is None:
            return
        if sess.backlog.pending():
            self.backlogs[sess.identity] = sess.backlog
        for mach_id in list(sess.subs):
            self.pushes.unsubscribe(sess, mach_id)
        sess.cancel_waiters()

    def sweep(self, now: float) -> None:
        """About once a second: retry undelivered pushes, drop sessions silent for longer than PEER_TIMEOUT."""
        self.pushes.due()
        for identity, backlog in list(self.backlogs.items()):
            if not backlog.pending():
                del self.backlogs[identity]
        for sess in list(self.sessions.values()):
            if now - sess.last_seen > P.PEER_TIMEOUT:
                log.info("client %s went silent, session dropped", sess.client_id)
                self.drop_session(sess)
