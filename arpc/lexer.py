"""Pygments lexer of an arpc command line: commands, flags, numbers and durations, strings, comments, ``.``,
known machine ids and state names (looked up live through the functions given to :func:`bound_lexer`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from pygments.lexer import RegexLexer
from pygments.token import (
    Comment,
    Error,
    Keyword,
    Name,
    Number,
    String,
    Text,
    Whitespace,
    _TokenType,
)

Tokens = Iterator[tuple[int, _TokenType, str]]


def _nothing() -> Iterable[str]:
    return ()


class ArpcLexer(RegexLexer):  # type: ignore[misc]
    name = "arpc"
    aliases: ClassVar[list[str]] = ["arpc"]
    filenames: ClassVar[list[str]] = []

    # set by bound_lexer(); each returns the current names
    commands: ClassVar[Any] = staticmethod(_nothing)
    machine_ids: ClassVar[Any] = staticmethod(_nothing)
    state_names: ClassVar[Any] = staticmethod(_nothing)

    def _command(self, match: Any) -> Tokens:
        word = match.group(2)
        if match.group(1):
            yield match.start(1), Whitespace, match.group(1)
        known = set(self.commands())
        yield match.start(2), (Keyword if not known or word in known else Error), word

    def _word(self, match: Any) -> Tokens:
        word = match.group(0)
        if word in set(self.machine_ids()):
            yield match.start(), Name.Class, word
        elif word in set(self.state_names()):
            yield match.start(), Name.Variable, word
        else:
            yield match.start(), Text, word

    tokens: ClassVar[dict[str, Any]] = {
        "root": [
            (r"^(\s*)([^\s#]+)", _command),
            (r"\s+", Whitespace),
            (r"#.*$", Comment.Single),
            (r'"(\\.|[^"\\])*"?', String.Double),
            (r"'[^']*'?", String.Single),
            (r"--?[A-Za-z][\w-]*(?==)", Name.Attribute),
            (r"--?[A-Za-z][\w-]*(?=\s|$)", Name.Attribute),
            (r"=", Text),
            (r"\d+(\.\d+)?(ms|s|m|h)?(?=\s|$)", Number),
            (r"\.(?=\s|$)", Name.Builtin),
            (r"[^\s=]+", _word),
        ],
    }


def bound_lexer(commands: Callable[[], Iterable[str]], machine_ids: Callable[[], Iterable[str]],
                state_names: Callable[[], Iterable[str]]) -> type[ArpcLexer]:
    """An :class:`ArpcLexer` subclass reading the live command, machine and state names."""
    return type("BoundArpcLexer", (ArpcLexer,), {
        "commands": staticmethod(commands), "machine_ids": staticmethod(machine_ids),
        "state_names": staticmethod(state_names)})


STYLE = {
    "pygments.keyword": "ansibrightblue bold",
    "pygments.error": "ansired",
    "pygments.name.attribute": "ansicyan",
    "pygments.name.class": "ansimagenta",
    "pygments.name.variable": "ansigreen",
    "pygments.name.builtin": "ansimagenta bold",
    "pygments.number": "ansiyellow",
    "pygments.string": "ansibrightyellow",
    "pygments.comment": "ansibrightblack italic",
}
