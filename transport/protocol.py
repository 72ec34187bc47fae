"""The wire format (see docs/protocol.md): one msgpack frame per message, ``[kind, seq, mach, body]``."""

from __future__ import annotations

import functools
import reprlib
import threading
from collections.abc import Mapping
from typing import Any

import msgpack

from machine import Arg, SchemaError, State
from machine.schema import MAX_ARGS

PROTO = 1
MAX_MSG = 16 * 1024 * 1024  # bytes; ZMQ_MAXMSGSIZE on both sockets
MAX_ITEMS = 100_000  # per array / map in a frame
MAX_ARGS_BYTES = 1024 * 1024  # packed args of one request (mutations, can, when_args), or add_err's msg + type
MAX_WHEN_ARGS_BYTES = 4 * 1024 * 1024  # packed args of one session's pending when_args waiters, in all
MAX_TOKEN_BYTES = 64  # a packed when_args token
HEARTBEAT = 1.0  # seconds between client pings
PEER_TIMEOUT = 3.5  # silence after which a peer counts as gone
REPLY_CACHE = 64  # replies kept per session for retried requests
MAX_PENDING = 1000  # requests one client may have queued at the server (ZMQ high-water mark per peer)

# requests (client -> server)
HELLO, MACHS, SUB, UNSUB, SYNC, PING, BYE = "hello", "machs", "sub", "unsub", "sync", "ping", "bye"
ADD, REMOVE, SET, ADD_NS, CAN, ADD_ERR = "add", "rm", "set", "add_ns", "can", "add_err"
WHEN_ARGS, WHEN_ARGS_CANCEL = "when_args", "when_args_cancel"
HIST, UNFOLLOW, INFO = "hist", "unfollow", "info"
GROUP, WATCH, UNWATCH = "group", "watch", "unwatch"  # many machines at once (server/fleet.py)
NS_MANY = "ns_many"  # a batch of add_ns, in order: body [[mach, states], [mach, states, args], ...]
# replies and pushes (server -> client)
OK, ERR, CLK, SCHEMA, ARGS_OK, PAY, HREC = "ok", "err", "clk", "schema", "args_ok", "pay", "hrec"
WREC = "wrec"  # the transition records of a watch

REQUESTS = frozenset({HELLO, MACHS, SUB, UNSUB, SYNC, PING, BYE, ADD, REMOVE, SET, ADD_NS, CAN, ADD_ERR,
                      WHEN_ARGS, WHEN_ARGS_CANCEL, HIST, UNFOLLOW, INFO, GROUP, WATCH, UNWATCH, NS_MANY})
MUTATING = frozenset({ADD, REMOVE, SET, ADD_NS, ADD_ERR})
NOTIFICATIONS = frozenset({ADD_NS, BYE, UNSUB, WHEN_ARGS_CANCEL, UNFOLLOW, UNWATCH, NS_MANY})

# error codes
INVALID_PARAMS = "invalid_params"
UNKNOWN_MACHINE = "unknown_machine"
UNKNOWN_STATE = "unknown_state"
NO_ACCESS = "no_access"
NOT_SUBSCRIBED = "not_subscribed"
LIMIT = "limit"
DUPLICATE = "duplicate"  # a retried mutation that was applied, whose result left the reply cache
STALE_SEQ = "stale_seq"  # a mutation whose seq is older than the session's record tells apart: not applied
INTERNAL = "internal"
BUSY = "busy"  # a dry run whose machine stayed in a transition past the wait: it did not run
NO_HISTORY = "no_history"  # history asked of a machine that keeps none
MAX_HIST_REPLY = 1000  # records in one hist reply
MAX_GROUP = 10_000  # machines named in one group request (a client sends more as several)
MAX_FOLLOWS = 10_000  # machines one session follows the history of (arpc dbg follows up to 5000)
HREC_UNTRACKED = 1024  # bytes: a larger hrec push counts in the session's MAX_BACKLOG


class FrameError(ValueError):
    """A frame that breaks the protocol; ``seq`` and ``mach`` are set when they could be read."""

    def __init__(self, msg: str, seq: int = 0, mach: str | None = None, code: str = INVALID_PARAMS) -> None:
        super().__init__(msg)
        self.seq = seq
        self.mach = mach
        self.code = code


_tls = threading.local()  # a Packer per thread: a shared one's buffer is not thread-safe


def pack(kind: str, seq: int, mach: str | None, body: Any) -> bytes:
    """Encode one message. Raises TypeError for values msgpack can't carry."""
    # reused, not one per message as packb() makes: a quarter of the cost. Taken out of its slot while in use:
    # Python code run by the packing (a dict subclass, a finalizer) may pack again on this thread, and sharing
    # the buffer would corrupt the outer frame. A failed pack() resets the buffer
    packer = _tls.__dict__.pop("packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    try:
        return packer.pack([kind, seq, mach, body])  # type: ignore[no-any-return]
    finally:
        _tls.packer = packer


def pack_entry(mach: str, states: list[str], args: dict[str, Any] | None) -> bytes:
    """One ``add_ns`` of an ``ns_many`` batch, packed alone (``pack_many`` joins them)."""
    packer = _tls.__dict__.pop("packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    try:
        return packer.pack([mach, states] if args is None else [mach, states, args])  # type: ignore[no-any-return]
    finally:
        _tls.packer = packer


_NS_HEAD = b"\x94" + msgpack.packb(NS_MANY) + msgpack.packb(0) + msgpack.packb(None)


def pack_many(entries: list[bytes]) -> bytes:
    """The ``ns_many`` notification of ``entries`` (from ``pack_entry``): the frame ``pack`` would make of
    ``[ns_many, 0, nil, [entry, ...]]``, without unpacking the entries again."""
    n = len(entries)
    head = bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big") if n < 65536 else \
        b"\xdd" + n.to_bytes(4, "big")
    return b"".join([_NS_HEAD, head, *entries])


_UNPACK_LIMITS: dict[str, Any] = dict(
    raw=False, strict_map_key=True, use_list=True, max_array_len=MAX_ITEMS, max_map_len=MAX_ITEMS, max_ext_len=0,
    max_bin_len=MAX_MSG, max_str_len=MAX_MSG)
_SEQ_END = 2**63
# the limits bound once: unpackb(data, **limits) spends more on the keyword arguments than on a small frame (2.7
# against 1.1 us), and every message each side reads goes through here
_unpackb = functools.partial(msgpack.unpackb, **_UNPACK_LIMITS)


def readable(data: bytes) -> bool:
    """True when ``data`` decodes under the limits ``unpack`` applies (no map key that is not a string, no ext
    type, no array or map past MAX_ITEMS)."""
    try:
        _unpackb(data)
    except Exception:
        return False
    return True


# frames up to this size are read by an Unpacker kept per thread (no keyword arguments to parse, a quarter of a
# small frame's decoding); larger ones by unpackb, so that no thread keeps a large buffer after a large frame
_REUSED_MAX = 64 * 1024


def unpack(data: bytes) -> tuple[str, int, str | None, Any]:
    """Decode and check the envelope of one message; raises FrameError."""
    n = len(data)
    if n > MAX_MSG:
        raise FrameError(f"message too large: {n} bytes > {MAX_MSG}", code=LIMIT)
    try:
        if n <= _REUSED_MAX:
            # unpackb's work through this thread's Unpacker: the same limits, and the same errors for a truncated
            # frame or one with bytes after its message; after any error the Unpacker is dropped, with what it
            # buffered. No Python code runs in it (no hooks): nothing can re-enter on this thread meanwhile
            u = _tls.__dict__.get("unpacker")
            if u is None:
                u = _tls.unpacker = msgpack.Unpacker(max_buffer_size=_REUSED_MAX, **_UNPACK_LIMITS)
            try:
                start = u.tell()
                u.feed(data)
                msg = u.unpack()
                if u.tell() - start != n:
                    raise msgpack.ExtraData(msg, b"")
            except BaseException as exc:
                _tls.unpacker = None
                if isinstance(exc, msgpack.OutOfData):  # unpackb's error for a truncated frame
                    raise ValueError("Unpack failed: incomplete input") from None
                raise
        else:
            msg = _unpackb(data)
    except Exception as exc:  # any decoding failure is the peer's fault, never ours
        raise FrameError(f"not a msgpack frame: {type(exc).__name__}: {exc}") from None
    # exact types: msgpack builds plain list, int and str (a bool is not a seq)
    if type(msg) is not list or len(msg) != 4:
        raise FrameError("a frame is [kind, seq, mach, body]")
    kind, seq, mach, body = msg
    if type(seq) is not int or not 0 <= seq < _SEQ_END:
        raise FrameError("seq must be an int >= 0")
    if mach is not None and (type(mach) is not str or not 0 < len(mach) <= 256):
        raise FrameError("mach must be a machine id or nil", seq=seq)
    if type(kind) is not str:
        raise FrameError("kind must be a string", seq=seq, mach=mach)
    return kind, seq, mach, body


def check_names(value: Any, what: str = "states") -> list[str]:
    """A list of state names from a request body (it may be empty: ``set()`` deactivates every state, as in
    the Machine API); raises ValueError."""
    if type(value) is not list:
        raise ValueError(f"{what} must be a list of state names")
    for s in value:
        if type(s) is not str:
            raise ValueError(f"{what} must be a list of state names")
    return value


def check_args(value: Any) -> dict[str, Any] | None:
    """Args from a request body: nil or a map with string keys; raises ValueError."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("args must be a map or nil")
    return value


def packed_size(value: Any) -> int:
    """The bytes ``value`` takes in a frame (it came in one, so it packs)."""
    return len(pack("", 0, None, value))


def sanitize(value: Any, depth: int = 0) -> Any:
    """A msgpack-safe copy of ``value`` (for args pushed to watchers); never raises.

    Unknown objects become their repr (clipped), exceptions ``"Type: msg"``; containers keep 1000 items and 8
    levels, deeper ones become a short repr; a value whose repr fails becomes a placeholder naming its type."""
    try:
        if value is None or isinstance(value, (bool, int, float, str, bytes)):
            if isinstance(value, int) and not -(2**63) <= value < 2**64:
                return str(value)
            return value
        if depth > 8:
            return _short_repr.repr(value)  # bounded in depth and size, whatever the nesting below
        if isinstance(value, dict):
            return {k if type(k) is str else clip(k): sanitize(v, depth + 1) for k, v in list(value.items())[:1000]}
        if isinstance(value, (list, tuple)):
            return [sanitize(v, depth + 1) for v in list(value)[:1000]]
        if isinstance(value, BaseException):
            return clip(f"{type(value).__name__}: {value}", 1000)
        return clip(repr(value), 1000)
    except Exception as exc:  # a repr, str or items() that raises (RecursionError included)
        return f"<{type(value).__name__}: unrepresentable ({type(exc).__name__})>"


_short_repr = reprlib.Repr()
_short_repr.maxlevel = 2
_short_repr.maxstring = _short_repr.maxother = 200


def clip(value: Any, limit: int = 200) -> str:
    """``value`` as a string of at most about ``limit`` characters, for logs and error messages: what a peer
    sent may be megabytes long."""
    s = value if isinstance(value, str) else _short_repr.repr(value)
    return s if len(s) <= limit else f"{s[:limit]}... ({len(s)} chars)"


def schema_to_wire(schema: dict[str, State]) -> dict[str, dict[str, Any]]:
    """A schema as plain maps (only the fields that are set)."""
    out: dict[str, dict[str, Any]] = {}
    for name, st in schema.items():
        d: dict[str, Any] = {}
        for field in ("require", "remove", "add", "after", "tags"):
            v = getattr(st, field)
            if v:
                d[field] = list(v)
        if st.auto:
            d["auto"] = True
        if st.multi:
            d["multi"] = True
        if st.args:
            d["args"] = args_to_wire(st.args)
        out[name] = d
    return out


def args_to_wire(args: Mapping[str, Arg]) -> dict[str, dict[str, str]]:
    """Declared args as plain maps: ``{name: {"type": "int", "help": "..."}}`` (help only when set)."""
    return {n: {"type": a.type, "help": a.help} if a.help else {"type": a.type} for n, a in args.items()}


def args_from_wire(data: Any) -> dict[str, Arg]:
    """The inverse of ``args_to_wire``, lenient: an entry this side cannot read (a type it does not know, a bad
    name, past the bounds) is left out, so a newer peer's declarations never break a mirror."""
    out: dict[str, Arg] = {}
    if not isinstance(data, dict):
        return out
    for name, d in list(data.items())[:MAX_ARGS]:
        if not isinstance(d, dict) or not isinstance(name, str) or len(name) > 64 or not name.isidentifier():
            continue
        help_text = d.get("help", "")
        try:
            out[name] = Arg(d.get("type"), help_text[:200] if isinstance(help_text, str) else "")
        except SchemaError:
            continue
    return out


def schema_from_wire(data: Any) -> dict[str, State]:
    """The inverse of ``schema_to_wire``; raises ValueError on a malformed schema."""
    if not isinstance(data, dict):
        raise ValueError("schema must be a map")
    out: dict[str, State] = {}
    for name, d in data.items():
        if not isinstance(d, dict):
            raise ValueError(f"state {name} must be a map")
        kw: dict[str, Any] = {}
        for field in ("require", "remove", "add", "after", "tags"):
            v = d.get(field, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"state {name}: {field} must be a list of names")
            kw[field] = v
        kw["auto"] = bool(d.get("auto", False))
        kw["multi"] = bool(d.get("multi", False))
        if "args" in d:
            kw["args"] = args_from_wire(d["args"])
        out[name] = State(**kw)
    return out


def checksum(time: list[int], qtick: int, mtick: int) -> int:
    """Detects a mirror that missed an update: ticks only grow, so any lost change alters the sum."""
    return (sum(time) + qtick + mtick) & 0xFFFFFFFF


def diff(old: list[int], new: list[int]) -> tuple[list[int], list[int]]:
    """Changed indexes and their tick deltas."""
    if old == new:
        return [], []
    idxs = [i for i in range(len(new)) if old[i] != new[i]]
    return idxs, [new[i] - old[i] for i in idxs]
