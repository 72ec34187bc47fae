"""Completion of REPL lines (spec 3.4): commands, flags, machine ids and ``.``, state names, filter values.

:func:`candidates` is the logic (pure, testable); :class:`ArpcCompleter` adapts it to prompt_toolkit. Which
values a parameter takes comes from the ``complete`` hints of the command table (:mod:`arpc.commands`):
after ``add MACH`` only inactive or multi states are offered, after ``remove MACH`` only active ones, states
already on the line are left out; after ``--arg NAME`` only ``--val``. ``--arg`` names are the args the machine
declares (with their type and help as the menu's note), then those of the lines run before (this session and the
history); ``--val`` of a declared bool offers ``true``/``false``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import click
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from .commands import COMMANDS, ArpcCommand
from .link import Entry
from .record import record as dataclass
from .session import Session


@dataclass
class Candidates:
    word: str  # the word being completed (replaced by a completion)
    items: list[str]
    kind: str = ""  # "file": complete a path instead
    meta: dict[str, str] | None = None  # a note per item (a declared arg's type and help)


def _tokens(text: str) -> tuple[list[str], str]:
    """Words before the cursor and the (partial) current word. Quotes are tolerated, not interpreted."""
    parts = text.split()
    if not text or text[-1].isspace():
        return parts, ""
    return parts[:-1], parts[-1]


def _entry(session: Session, ref: str | None) -> Entry | None:
    if ref is None:
        return None
    try:
        if ref == ".":
            return session.first()
        for e in session.entries():
            if e.id == ref:
                return e
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return None
    return None


def _multi(entry: Entry) -> set[str]:
    m = entry.mirror
    if m is None:
        return set()
    try:
        return {n for n, st in m.schema.items() if st.multi}
    except Exception:  # noqa: BLE001
        return set()


def _named_connections() -> list[str]:
    """``@name`` of each connection in the config file (none when it is missing or broken)."""
    try:
        from .settings import load_config

        return [f"@{n}" for n in load_config().connections]
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return []


def _declared(session: Session, mach: str | None) -> dict[str, object]:
    """The args declared by the line's machine, or by any listed machine when the command has none."""
    try:
        if mach is not None:
            entry = _entry(session, mach)
            return dict(entry.args) if entry is not None else {}
        out: dict[str, object] = {}
        for e in session.entries():
            for name, a in e.args.items():
                out.setdefault(name, a)
        return out
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return {}


def _arg_meta(declared: dict[str, object]) -> dict[str, str]:
    return {n: f"{getattr(a, 'type', '')}: {getattr(a, 'help', '')}".rstrip(": ") for n, a in declared.items()}


def _values(session: Session, hint: str, mach: str | None, typed: Iterable[str]) -> list[str]:
    typed = set(typed)
    if hint == "machine":
        return [".", *(e.id for e in session.entries())]
    if hint == "command":
        return list(COMMANDS)
    if hint == "parent":
        return sorted({p for e in session.entries() if (p := e.parent_id)})
    if hint == "address":
        return [*session.addresses, *_named_connections()]
    if hint == "arg":
        names = [*_declared(session, mach), *session.arg_names]
        return [n for n in dict.fromkeys(names) if n not in typed]
    if hint == "all-states":
        return [s for s in session.state_union() if s not in typed]
    if hint.startswith("states"):
        entry = _entry(session, mach)
        if entry is None:
            return []
        clock = entry.clock()
        if hint == "states:inactive":
            multi = _multi(entry)
            names = [n for n, t in clock.items() if not t & 1 or n in multi]
        elif hint == "states:active":
            names = [n for n, t in clock.items() if t & 1]
        else:
            names = list(clock)
        return [n for n in names if n not in typed]
    return []


def _option_names(cmd: click.Command) -> dict[str, click.Option]:
    out: dict[str, click.Option] = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for o in (*p.opts, *p.secondary_opts):
                out[o] = p
    return out


def _takes_value(p: click.Option) -> bool:
    """True when the option consumes the next word (not flags, not optional-value options like -z)."""
    return not p.is_flag and not getattr(p, "_flag_needs_value", False) and p.count is False


def _long_names(cmd: click.Command) -> list[str]:
    out = []
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden:
            longs = [o for o in p.opts if o.startswith("--")] or list(p.opts)
            out.extend(longs[:1])
            out.extend(o for o in p.secondary_opts if o.startswith("--"))
    out.append("--help")
    return out


def candidates(session: Session, text: str) -> Candidates:
    """What may follow ``text`` (the line up to the cursor)."""
    words, cur = _tokens(text)
    if not words:
        return Candidates(cur, list(COMMANDS))
    cmd = COMMANDS.get(words[0])
    if cmd is None:
        return Candidates(cur, [])
    hints = cmd.complete if isinstance(cmd, ArpcCommand) else {}
    opts = _option_names(cmd)
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    positional: list[str] = []
    expecting: click.Option | None = None
    n_arg = n_val = 0
    typed: list[str] = []  # option values that name states (excluded again)
    typed_args: list[str] = []  # --arg names already on the line
    for w in words[1:]:
        if expecting is not None:
            if expecting.name in ("active", "inactive", "mtime_states", "state"):
                typed.append(w)
            elif expecting.name == "arg_names":
                typed_args.append(w)
            expecting = None
            continue
        if w.startswith("-") and len(w) > 1 and w != "-":
            name = w.split("=", 1)[0]
            p = opts.get(name)
            if p is not None:
                if p.name == "arg_names":
                    n_arg += 1
                elif p.name in ("arg_vals", "json_vals"):
                    n_val += 1
                if "=" not in w and _takes_value(p):
                    expecting = p
            continue
        positional.append(w)
    has_args = "arg_names" in {p.name for p in cmd.params}

    if expecting is not None:  # the current word is an option's value
        hint = hints.get(expecting.name or "", "")
        if hint == "file":
            return Candidates(cur, [], "file")
        mach = positional[0] if positional and arguments and arguments[0].name == "mach" else None
        if hint == "arg":
            return Candidates(cur, _values(session, hint, mach, typed_args),
                              meta=_arg_meta(_declared(session, mach)))
        if expecting.name == "arg_vals" and typed_args:
            decl = _declared(session, mach).get(typed_args[-1])
            if getattr(decl, "type", None) == "bool":
                return Candidates(cur, ["true", "false"])
        return Candidates(cur, _values(session, hint, mach, typed))
    if has_args and n_arg > n_val:
        return Candidates(cur, ["--val"])
    if cur.startswith("-"):
        return Candidates(cur, _long_names(cmd))
    if has_args and n_arg:
        return Candidates(cur, ["--arg"])

    # a positional slot
    idx, param = 0, None
    for a in arguments:
        if a.nargs == -1 or idx + a.nargs > len(positional):
            param = a
            break
        idx += a.nargs
    items: list[str] = []
    if param is not None:
        hint = hints.get(param.name or "", "")
        if hint == "file":
            return Candidates(cur, [], "file")
        mach = positional[0] if arguments and arguments[0].name == "mach" and positional else None
        items = _values(session, hint, mach, [*positional[1:], *typed])
        if param.nargs == -1 and has_args and len(positional) > idx:
            items.append("--arg")
    elif has_args:
        items = ["--arg"]
    return Candidates(cur, items)


def arg_names_in(line: str) -> list[str]:
    """The ``--arg`` names of a command line (what ``--arg`` completion offers later)."""
    words = line.split()
    out = []
    for i, w in enumerate(words):
        if w == "--arg" and i + 1 < len(words):
            out.append(words[i + 1])
        elif w.startswith("--arg="):
            out.append(w[len("--arg="):])
    return [n.strip("'\"") for n in out if n.strip("'\"")]


class ArpcCompleter(Completer):
    """Case-insensitive prefix completion over :func:`candidates`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._paths = PathCompleter(expanduser=True)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        try:
            cand = candidates(self.session, document.text_before_cursor)
        except Exception:  # noqa: BLE001 - never break the prompt
            return
        if cand.kind == "file":
            sub = Document(cand.word, len(cand.word))
            yield from self._paths.get_completions(sub, complete_event)
            return
        low = cand.word.lower()
        seen: set[str] = set()
        for item in cand.items:
            if item in seen or not item.lower().startswith(low):
                continue
            seen.add(item)
            meta = cand.meta.get(item) if cand.meta else None
            yield Completion(item, start_position=-len(cand.word), display_meta=meta or None)


__all__ = ["ArpcCompleter", "Candidates", "candidates"]
