"""Running a command line: split it, find the command in the table, run it, print its result or a one-line error,
and return the exit code. Never raises, except :class:`arpc.errors.ExitRepl` (and a broken stdout pipe)."""

from __future__ import annotations

from collections.abc import Sequence

import click

from ..errors import (
    FAILED,
    INTERRUPTED,
    OK,
    ArpcError,
    ExitRepl,
    Failed,
    Interrupted,
    NotConnected,
    UsageError,
    is_state_error,
    is_transport_error,
)
from ..format import Result
from .registry import ALIASES, COMMANDS, Cx, HelpRequested, lookup


def split_line(line: str) -> list[str]:
    """The words of a command line (shell quoting, ``#`` comments)."""
    import shlex

    try:
        return shlex.split(line, comments=True)
    except ValueError as e:
        raise UsageError(f"cannot parse line: {e}") from None


def split_commands(line: str) -> list[str]:
    """``a; b`` -> ``["a", " b"]``: the commands of a line, split at each ``;`` outside quotes and comments."""
    parts: list[str] = []
    start, quote, i = 0, "", 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            break  # a comment: shlex drops it, ';' in it included
        elif c == ";":
            parts.append(line[start:i])
            start = i + 1
        i += 1
    parts.append(line[start:])
    return parts


def run_line(cx: Cx, line: str) -> int:
    """Run one line (one command, or several separated by ``;``); the first failure's exit code (0: none).

    Every command of the line runs, as in a shell, unless one is interrupted (Ctrl+C)."""
    first = OK
    for part in split_commands(line):
        if part.strip() == "\\q":  # shlex would read the backslash as an escape
            raise ExitRepl(OK)
        try:
            words = split_line(part)
        except ArpcError as e:
            code = _report(cx, e)
        else:
            code = dispatch(cx, words)
        first = first or code
        if code == INTERRUPTED:
            break
    return first


def dispatch(cx: Cx, words: Sequence[str]) -> int:
    """Run one command (``words[0]`` + its arguments); prints the result or a one-line error; the exit code."""
    if not words:
        return OK
    name, rest = words[0], list(words[1:])
    try:
        cmd = lookup(name)
        if cmd is None:
            raise UsageError(f"unknown command: {name}" + _suggest(name))
        name = cmd.name or name
        try:
            ctx = cmd.make_context(name, rest, obj=cx)
            with ctx:
                result = cmd.invoke(ctx)
        except HelpRequested as h:
            result = Result.text(h.text.splitlines())
        except click.UsageError as e:
            raise UsageError(f"{name}: {e.format_message()}") from None
        except click.exceptions.Exit as e:
            return int(e.exit_code)
        except click.Abort:
            raise Interrupted() from None
        if result is None:
            return OK
        cx.emit(result)
        return int(result.code)
    except ExitRepl:
        raise
    except ArpcError as e:
        return _report(cx, e)
    except KeyboardInterrupt:
        return _report(cx, Interrupted())
    except BrokenPipeError:
        raise
    except Exception as e:  # noqa: BLE001 - a bad line never kills the REPL
        return _report(cx, _map_exception(e))


def _report(cx: Cx, err: ArpcError) -> int:
    """Print ``err`` (prefixed with ``FILE:LINE`` inside a script); its exit code."""
    if cx.where is not None and not isinstance(err, Interrupted):  # Ctrl+C is no fault of the line
        err.msg = f"{cx.where}: {err.msg}"
    cx.printer.error(err)
    return err.code


def _map_exception(e: Exception) -> ArpcError:
    if isinstance(e.__context__, KeyboardInterrupt):
        # a second Ctrl+C during the first one's cleanup (e.g. inside threading's lock handling)
        return Interrupted()
    if isinstance(e, UnicodeError):
        return UsageError(f"not valid text (UTF-8): {e}")
    if is_state_error(e):
        return Failed(str(e))
    if is_transport_error(e):
        return NotConnected(str(e) or "not connected")
    return ArpcError(f"internal error: {type(e).__name__}: {e}", FAILED)


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), [*COMMANDS, *ALIASES], n=1)
    return f" (did you mean {close[0]}?)" if close else ""
