"""The interactive shell: a prompt_toolkit ``PromptSession`` over the command table.

Imported only in REPL mode (prompt_toolkit and pygments are slow to import). Commands run in the main thread
between prompts, so Ctrl+C during a running ``when`` is a plain ``KeyboardInterrupt`` (``err> interrupted``, back
to the prompt); connection notices from background threads print above the prompt (``patch_stdout``).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.enums import EditingMode
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.lexers import PygmentsLexer
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.styles import Style

from .commands import COMMANDS, Cx, run_line
from .completer import ArpcCompleter, arg_names_in
from .config import load_config
from .errors import OK, ExitRepl
from .format import Printer
from .history import JsonLinesHistory, read_history
from .keys import build_key_bindings
from .lexer import STYLE, bound_lexer
from .session import Session

BANNER = "Welcome to aRPC! Tab to start, help, or Ctrl+D to exit."
PROMPT = "arpc> "

STYLES = {
    **STYLE,
    "prompt.all": "ansigreen bold",
    "prompt.some": "ansiyellow bold",
    "prompt.none": "ansired bold",
    "bottom-toolbar": "noreverse bg:ansibrightblack ansiwhite",
    "bottom-toolbar.all": "ansigreen",
    "bottom-toolbar.some": "ansiyellow",
    "bottom-toolbar.none": "ansired",
}


def level(session: Session) -> str:
    """``all`` / ``some`` / ``none``: how many machines are connected (the prompt's colour)."""
    st = session.status()
    if st.total and st.connected == st.total:
        return "all"
    return "some" if st.connected else "none"


def toolbar_text(session: Session) -> str:
    st = session.status()
    try:
        first = session.first().id if st.total else "-"
    except Exception:  # noqa: BLE001
        first = "-"
    return f" connected {st.connected}/{st.total} │ . = {first} │ Tab complete · Ctrl+D exit · Ctrl+C cancel "


class Repl:
    def __init__(self, session: Session, printer: Printer, *, watch: bool = True, detail: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.session = session
        self.printer = printer
        self.watch = watch
        self.detail = detail  # --log-level: connection errors with the transport's own words
        env = dict(os.environ if env is None else env)
        self.config = load_config(env, color=printer.color)
        self.cx = Cx(session, printer, repl=True)
        self.prompt_session: PromptSession[str] | None = None

    # ------------------------------------------------------------------ pieces

    def message(self) -> FormattedText:
        try:
            lvl = level(self.session)
        except Exception:  # noqa: BLE001 - drawing the prompt must never fail
            lvl = "none"
        return FormattedText([(f"class:prompt.{lvl}", PROMPT)])

    def toolbar(self) -> FormattedText:
        try:
            lvl, text = level(self.session), toolbar_text(self.session)
        except Exception:  # noqa: BLE001
            lvl, text = "none", " Tab complete · Ctrl+D exit · Ctrl+C cancel "
        return FormattedText([(f"class:bottom-toolbar.{lvl}", text)])

    def notify(self, msg: str, error: bool) -> None:
        self.printer.notice(msg, error)
        self.redraw()

    def redraw(self) -> None:
        ps = self.prompt_session
        if ps is not None:
            try:
                ps.app.invalidate()
            except Exception:  # noqa: BLE001
                pass

    def build(self) -> PromptSession[str]:
        s = self.session
        lexer = bound_lexer(lambda: COMMANDS, lambda: [e.id for e in s.entries()], s.state_union)
        ps: PromptSession[str] = PromptSession(
            message=self.message,
            history=JsonLinesHistory(self.config.history_path),
            completer=ArpcCompleter(s),
            complete_while_typing=False,
            auto_suggest=AutoSuggestFromHistory(),
            lexer=PygmentsLexer(lexer),
            style=Style.from_dict(STYLES),
            include_default_pygments_style=False,
            bottom_toolbar=self.toolbar,
            editing_mode=EditingMode.VI if self.config.editing_mode == "vi" else EditingMode.EMACS,
            key_bindings=build_key_bindings(),
            enable_history_search=False,
            refresh_interval=1.0,
            color_depth=None if self.config.color else ColorDepth.DEPTH_1_BIT,
        )
        return ps

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        s = self.session
        s.notify = self.notify
        s.on_change = self.redraw
        print(BANNER, flush=True)
        if not s.opened:
            s.open()
        st = s.status()
        print(f"connected {st.connected}/{st.total}", flush=True)
        for line in s.failures(self.detail):
            self.printer.warn(line)
        s.start_background(watch=self.watch)
        self.prompt_session = self.build()
        for past in read_history(self.config.history_path):
            if "--arg" in past:
                s.remember_args(arg_names_in(past))
        # SIGINT raises KeyboardInterrupt only while a command runs (to cancel it). Elsewhere it is ignored: at
        # the prompt Ctrl+C is a key anyway (the terminal is raw), and a signal that lands between two prompts
        # (Ctrl+C held down, or pressed as a command ends) would otherwise interrupt prompt_toolkit while it
        # builds or tears down its event loop, and leave it broken. One handler and a flag, never a swap of
        # handlers: a signal pending across a swap would run the wrong one.
        running = [False]

        def on_sigint(signum: int, frame: Any) -> None:
            if running[0]:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, on_sigint)
        eof: Any = None
        try:
            with patch_stdout(raw=True):
                while True:
                    try:
                        # reset first, in this try: a KeyboardInterrupt that lands here just starts the turn again
                        running[0] = False
                        if eof is not None:
                            _eof_key_on(eof)
                            eof = None
                        # prompt_toolkit's own SIGINT handling queues one Ctrl+C per signal, and those
                        # that run after the prompt ended raise in its loop: the terminal's Ctrl+C key is enough
                        line = self.prompt_session.prompt(handle_sigint=False)
                    except KeyboardInterrupt:
                        continue
                    except EOFError:
                        break
                    if "--arg" in line:
                        self.session.remember_args(arg_names_in(line))
                    try:
                        eof = _eof_key_off()
                        running[0] = True
                        run_line(self.cx, line)
                    except ExitRepl:
                        break
                    except KeyboardInterrupt:  # after the command caught its own, before the flag is reset
                        continue
        finally:
            running[0] = False
            _eof_key_on(eof)
            signal.signal(signal.SIGINT, previous)
        return OK


def _eof_key_off() -> Any:
    """While a command runs the terminal is in cooked mode, where a Ctrl+D typed ahead becomes an end-of-file mark
    that the next prompt reads as NUL (Ctrl+Space). With the EOF key off it stays a plain Ctrl+D, which the next
    prompt then takes as "exit". Returns what to restore (None: stdin is not a terminal)."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        changed = [*saved[:6], list(saved[6])]
        changed[6][termios.VEOF] = b"\x00"  # _POSIX_VDISABLE on Linux
        termios.tcsetattr(fd, termios.TCSANOW, changed)
        return saved
    except Exception:  # noqa: BLE001 - not a terminal, or no termios: nothing to do
        return None


def _eof_key_on(saved: Any) -> None:
    if saved is None:
        return
    try:
        import termios

        termios.tcsetattr(sys.stdin.fileno(), termios.TCSANOW, saved)
    except Exception:  # noqa: BLE001
        pass


def run_repl(session: Session, printer: Printer, opts: Any) -> int:
    return Repl(session, printer, watch=getattr(opts, "watch", True), detail=getattr(opts, "log_level", 0) > 0).run()
