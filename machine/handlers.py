"""Handler bindings: which of an object's attributes are handlers for a schema's states; binding and unbinding."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .machine import Machine

_NEGOTIATION_SUFFIXES = ("Enter", "Exit")
_FINAL_SUFFIXES = ("State", "End")


def handler_kind(name: str, states: Mapping[str, Any]) -> str | None:
    """'negotiation', 'final' or None when ``name`` is not a handler name for these states."""
    if name == "AnyEnter":
        return "negotiation"
    if name == "AnyState":
        return "final"
    for suffix in _NEGOTIATION_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in states:
            return "negotiation"
    for suffix in _FINAL_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in states:
            return "final"
    # a pair handler FooBar: Foo active before, Bar in the target
    for i in range(1, len(name)):
        if name[:i] in states and name[i:] in states:
            return "negotiation"
    return None


_CO_COROUTINE = 0x80  # inspect.CO_COROUTINE, without importing inspect (slow to import)


def _is_async(fn: Any) -> bool:
    """True for an ``async def`` function or a method of one."""
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


class Binding:
    """One bound object (or dict) and the handlers found on it."""

    __slots__ = ("obj", "name", "seq", "handlers", "async_names")

    def __init__(self, obj: object, seq: int, states: Mapping[str, Any]) -> None:
        self.obj = obj
        self.seq = seq
        if isinstance(obj, Mapping):
            self.name = f"dict-{seq}"
            items = list(obj.items())
        else:
            self.name = f"{type(obj).__name__}-{seq}"
            items = []
            for attr in dir(obj):
                if attr.startswith("_") or handler_kind(attr, states) is None:
                    continue
                items.append((attr, getattr(obj, attr, None)))
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.async_names: set[str] = set()
        for name, fn in items:
            if not isinstance(name, str) or not callable(fn):
                continue
            kind = handler_kind(name, states)
            if kind is None:
                continue
            if _is_async(fn):
                if kind != "final":
                    raise TypeError(
                        f"handler {name} of {self.name} is async: only final handlers (State/End) may be async"
                    )
                self.async_names.add(name)
            self.handlers[name] = fn


NO_BINDINGS: list[Binding] = []  # a new machine's bindings: shared, never written to (binding replaces the list)


def bind_handlers(mach: Machine, obj: object) -> None:
    """See ``Machine.bind_handlers``; a new list, so a running transition keeps the one it read."""
    b = Binding(obj, mach._bind_seq, mach._c.index)
    with mach._lock:
        mach._bind_seq += 1
        mach._bindings = [*mach._bindings, b]
        mach._bound = {}  # the per-plan handler lists (execution._bound_for's cache) are rebuilt


def detach_handlers(mach: Machine, obj: object) -> None:
    """See ``Machine.detach_handlers``."""
    with mach._lock:
        kept = [b for b in mach._bindings if b.obj is not obj]
        if len(kept) == len(mach._bindings):
            raise ValueError(f"handlers not bound: {obj!r} (machine {mach._id})")
        mach._bindings = kept
        mach._bound = {}
