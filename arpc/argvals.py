"""Typed ``--arg``/``--val`` pairs: a value typed in a shell becomes what the machine declared for that arg.

The rule (manual, "Args"): an arg the machine declares (``State(args={"job": Arg(int)})``) gets its ``--val``
converted to the declared type (int, float, bool, str, bytes, JSON); a bad value is a usage error naming the arg.
An undeclared arg's ``--val`` is sent as a string, and ``when-args`` matches it by text (``--val 2`` matches a
source's ``job=2`` and ``job="2"``). ``--json-val`` parses JSON instead (exact match in ``when-args``); for a
declared arg the parsed value must be of the declared type. Names pair with values in command-line order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import UsageError

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")
_A = {"int": "an int", "float": "a float", "bool": "a bool (true/false)", "str": "a string", "bytes": "bytes",
      "json": "JSON"}


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


def from_text(name: str, text: str, kind: str) -> Any:
    """``--val TEXT`` of arg ``name`` declared as ``kind``; UsageError naming the arg when it does not convert."""
    try:
        if kind == "int":
            return int(text.strip())
        if kind == "float":
            return float(text.strip())
        if kind == "bool":
            low = text.strip().lower()
            if low in _TRUE or low in _FALSE:
                return low in _TRUE
            raise ValueError(text)
        if kind == "bytes":
            return text.encode("utf-8")
        if kind == "json":
            return _json(text)
    except ValueError:
        raise UsageError(f"--val of arg {name}: not {_A[kind]}: {_shown(text)}") from None
    return text


def _json(text: str) -> Any:
    import json

    return json.loads(text)


def from_json(name: str, text: str, kind: str | None) -> Any:
    """``--json-val TEXT`` of arg ``name``: parsed JSON, checked against the declared ``kind`` (None: any)."""
    try:
        value = _json(text)
    except ValueError as e:
        raise UsageError(f"--json-val of arg {name}: not JSON ({e}): {_shown(text)}") from None
    if kind is None or kind == "json":
        return value
    if kind == "bytes" and isinstance(value, str):
        return value.encode("utf-8")
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    ok = {"int": int, "float": float, "bool": bool, "str": str}.get(kind)
    if ok is None or not isinstance(value, ok) or (kind == "int" and isinstance(value, bool)):
        raise UsageError(f"--json-val of arg {name}: not {_A[kind]}: {_shown(text)}")
    return value


def typed_args(names: Sequence[str], vals: Sequence[str], json_vals: Sequence[str], order: Sequence[str] | None,
               declared: Mapping[str, Any]) -> tuple[dict[str, Any] | None, set[str]]:
    """The mutation's args from the pairs, and the names given as undeclared text (``when-args`` compares those
    by text). ``order``: ``"json"`` or ``"val"`` per value in command-line order (None: the ``--val``s first);
    ``declared``: ``{name: Arg}``. The pairs are checked already (``commands.common.check_pairs``)."""
    if not names:
        return None, set()
    kinds = list(order) if order is not None else ["val"] * len(vals) + ["json"] * len(json_vals)
    texts, jsons = iter(vals), iter(json_vals)
    out: dict[str, Any] = {}
    by_text: set[str] = set()
    for name, kind in zip(names, kinds, strict=True):
        decl = declared.get(name)
        if kind == "json":
            out[name] = from_json(name, next(jsons), decl.type if decl is not None else None)
            by_text.discard(name)
        elif decl is not None:
            out[name] = from_text(name, next(texts), decl.type)
            by_text.discard(name)
        else:
            out[name] = next(texts)
            by_text.add(name)
    return out, by_text


def same(actual: Any, want: Any) -> bool:
    """Typed equality for ``when-args``: ``True`` is not ``1``, ``2`` is ``2.0``."""
    if isinstance(actual, bool) or isinstance(want, bool):
        return isinstance(actual, bool) and isinstance(want, bool) and actual == want
    return bool(actual == want)


def text_matches(actual: Any, want: str) -> bool:
    """An arg as a source set it against an undeclared ``--val``: ``2`` matches ``"2"``, ``True`` matches
    ``true``, a string matches itself."""
    if isinstance(actual, bool):
        return want.lower() == str(actual).lower()
    return actual == want or (not isinstance(actual, str) and str(actual) == want)


def merged(declarations: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The declarations of several machines (``group-add``); UsageError when they type one name differently."""
    out: dict[str, Any] = {}
    for decl in declarations:
        for name, a in decl.items():
            seen = out.setdefault(name, a)
            if seen.type != a.type:
                raise UsageError(f"arg {name} is {seen.type} on one machine and {a.type} on another: "
                                 f"mutate them apart")
    return out
