"""Key bindings of the REPL prompt (on top of prompt_toolkit's emacs / vi defaults).

- Ctrl+C: clears the line when there is text, else starts a fresh prompt (never leaves).
- Ctrl+D on an empty line: exit (prompt_toolkit default, raises EOFError).
- Ctrl+Space: open the completion menu.
- Tab / Up / Down / Ctrl+R: completion, history and reverse search (prompt_toolkit defaults).
A Ctrl+C while a command runs (the prompt is not active) is SIGINT: the REPL turns it into ``err> interrupted``;
any other SIGINT is ignored (see ``Repl.run``).
"""

from __future__ import annotations

from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.key_binding.key_processor import KeyPressEvent


def build_key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add("c-c")
    def _(event: KeyPressEvent) -> None:
        buf = event.app.current_buffer
        if buf.text:
            buf.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    @kb.add("c-space")
    def _(event: KeyPressEvent) -> None:
        buf = event.app.current_buffer
        if buf.complete_state:
            buf.complete_next()
        else:
            buf.start_completion(select_first=False)

    return kb
