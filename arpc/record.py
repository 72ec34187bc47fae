"""``@record``: a small ``@dataclass`` (``__init__``, ``__repr__``, ``__eq__``) that does not import
``dataclasses``, whose import (it pulls in ``inspect``) is a tenth of the one-shot CLI's start-up budget."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")


class _Factory:
    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is ``default_factory()`` (like ``dataclasses.field``)."""
    return _Factory(default_factory)


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Give ``cls`` an ``__init__`` over its annotated fields (in order, defaults from the class body),
    a ``__repr__`` and a field-wise ``__eq__``."""
    names = [n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_")]
    defaults = {n: cls.__dict__[n] for n in names if n in cls.__dict__}

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes at most {len(names)} arguments")
        values = dict(zip(names, args, strict=False))
        for k, v in kwargs.items():
            if k not in names or k in values:
                raise TypeError(f"{cls.__name__}() got an unexpected or repeated argument {k!r}")
            values[k] = v
        for n in names:
            if n in values:
                v = values[n]
            elif n in defaults:
                d = defaults[n]
                v = d.make() if isinstance(d, _Factory) else d
            else:
                raise TypeError(f"{cls.__name__}() missing argument {n!r}")
            object.__setattr__(self, n, v)

    def __repr__(self: Any) -> str:
        return f"{cls.__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in names) + ")"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in names)

    for n, d in defaults.items():
        if isinstance(d, _Factory):
            delattr(cls, n)  # the class attribute would shadow nothing useful
    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.__repr__ = __repr__  # type: ignore[method-assign]
    cls.__eq__ = __eq__  # type: ignore[method-assign]
    cls.__hash__ = None  # type: ignore[assignment]
    return cls
