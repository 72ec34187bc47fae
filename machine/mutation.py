"""Results, mutation types, the queued ``Mutation`` record, and the queue's storage (``own_queue``)."""

from __future__ import annotations

import enum
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .machine import Machine


class Result(enum.IntEnum):
    """What a mutation did. Any int >= QUEUED returned by a mutation is its queue tick (see ``when_queue``)."""

    EXECUTED = 0
    CANCELED = 1
    QUEUED = 2

    def __str__(self) -> str:
        return self.name.lower()


_new = object.__new__
_CANCELED = Result.CANCELED  # a module global: read through the enum class it costs about 100 ns


def args_dict(args: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A mutation's args as a new dict, None for none; TypeError for anything but a mapping."""
    if not args:
        if args is None or isinstance(args, Mapping):
            return None
        raise TypeError(f"args must be a dict, got {type(args).__name__}")
    if not isinstance(args, Mapping):
        raise TypeError(f"args must be a dict, got {type(args).__name__}")
    return dict(args)


def in_backoff(mach: Machine) -> bool:
    """True while the machine backs off after an exception (``_backoff_until``); resets it once passed."""
    if _time.monotonic() < mach._backoff_until:
        return True
    mach._backoff_until = 0.0
    return False


class MutationType(enum.IntEnum):
    """The kind of a mutation."""

    ADD = 0
    REMOVE = 1
    SET = 2
    EVAL = 3

    def __str__(self) -> str:
        return self.name.lower()


class Mutation:
    """A queued request to change the machine (or, for EVAL, to run a function serialised with transitions)."""

    __slots__ = (
        "type", "called", "args", "is_auto", "is_check", "queue_tick", "fn", "done", "result",
    )

    type: MutationType
    called: tuple[str, ...]
    args: dict[str, Any] | None
    is_auto: bool
    is_check: bool
    queue_tick: int
    fn: Callable[[], Any] | None
    done: threading.Event | None  # set for evals and checks waited on from another thread
    result: int

    def __new__(cls, type: MutationType, called: tuple[str, ...], args: dict[str, Any] | None, queue_tick: int = 0,
                is_auto: bool = False, is_check: bool = False, fn: Callable[[], Any] | None = None) -> Mutation:
        m = new_mutation(type, called, args, queue_tick, is_auto, is_check, fn)
        return m if cls is Mutation else _as(cls, m)

    def __init__(self, type: MutationType, called: tuple[str, ...], args: dict[str, Any] | None, queue_tick: int = 0,
                 is_auto: bool = False, is_check: bool = False, fn: Callable[[], Any] | None = None) -> None:
        """Made by ``__new__``; a subclass's ``__init__`` may call this one (it does nothing)."""

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy and pickle call ``__new__`` with these
        return self.type, self.called, self.args, self.queue_tick, self.is_auto, self.is_check, self.fn

    def __repr__(self) -> str:
        flags = "".join([":auto" if self.is_auto else "", ":check" if self.is_check else ""])
        return f"<Mutation [{self.type}{flags}] {' '.join(self.called)} q{self.queue_tick}>"


def new_mutation(type: MutationType, called: tuple[str, ...], args: dict[str, Any] | None, queue_tick: int = 0,
                 is_auto: bool = False, is_check: bool = False, fn: Callable[[], Any] | None = None) -> Mutation:
    """A new ``Mutation`` (``Mutation(...)`` calls this). The mutation paths call it directly, for the reason given
    in ``transition.new_transition``."""
    m = _new(Mutation)
    m.type = type
    m.called = called
    m.args = args
    m.is_auto = is_auto
    m.is_check = is_check
    m.queue_tick = queue_tick
    m.fn = fn
    m.done = None
    m.result = _CANCELED
    return m


def _as(cls: type[Any], obj: Any) -> Any:
    """A subclass's instance with ``obj``'s slots (``__new__`` of a subclass of Mutation, Transition or Event: the
    module functions make the base class, and a subclass's ``__init__`` runs only on an instance of it)."""
    inst = _new(cls)
    for name in type(obj).__slots__:
        setattr(inst, name, getattr(obj, name))
    return inst


# a machine's queue until something is queued (most machines run every mutation at once): shared, empty, immutable
NO_QUEUE: tuple[()] = ()


def own_queue(mach: Machine) -> deque[Mutation]:
    """The machine's queue, made on first use. Called with the lock held, as every write to the queue is."""
    q = mach._queue
    if isinstance(q, deque):
        return q
    d: deque[Mutation] = deque()
    mach._queue = d
    return d
