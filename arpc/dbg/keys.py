"""The keys of ``arpc dbg`` (the help bar lists the main ones). Moving keys act on the focused pane: the machine
list, the state board, or the log (where moving is time travel)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prompt_toolkit.filters import Condition
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.key_binding.key_processor import KeyPressEvent

if TYPE_CHECKING:
    from .app import DbgApp

PANES = ("list", "board", "log")
PAGE = 10


def build_key_bindings(dbg: DbgApp) -> KeyBindings:
    kb = KeyBindings()
    normal = Condition(lambda: dbg.mode is None)
    filtering = Condition(lambda: dbg.mode == "filter")
    confirming = Condition(lambda: dbg.mode == "confirm")
    model, panes = dbg.model, dbg.panes

    def move(delta: int) -> None:
        if panes.focus == "list":
            model.move(delta)
        elif panes.focus == "board":
            panes.move_state(delta)
        else:
            model.travel(delta)

    @kb.add("q", filter=normal)
    @kb.add("c-c")
    def _quit(event: KeyPressEvent) -> None:
        event.app.exit(result=0)

    for keys, delta in ((("up",), -1), (("k",), -1), (("down",), 1), (("j",), 1), (("pageup",), -PAGE),
                        (("pagedown",), PAGE)):
        @kb.add(*keys, filter=normal)
        def _move(event: KeyPressEvent, delta: int = delta) -> None:
            move(delta)

    @kb.add("home", filter=normal)
    def _home(event: KeyPressEvent) -> None:
        move(-10**9)

    @kb.add("end", filter=normal)
    def _end(event: KeyPressEvent) -> None:
        if panes.focus == "log":
            model.live()
        else:
            move(10**9)

    @kb.add("tab", filter=normal)
    def _next(event: KeyPressEvent) -> None:
        panes.focus = PANES[(PANES.index(panes.focus) + 1) % len(PANES)]
        model.version += 1

    @kb.add("s-tab", filter=normal)
    def _prev(event: KeyPressEvent) -> None:
        panes.focus = PANES[(PANES.index(panes.focus) - 1) % len(PANES)]
        model.version += 1

    @kb.add("left", filter=normal)
    @kb.add("[", filter=normal)
    def _back(event: KeyPressEvent) -> None:
        model.travel(-1)

    @kb.add("right", filter=normal)
    @kb.add("]", filter=normal)
    def _forth(event: KeyPressEvent) -> None:
        model.travel(1)

    @kb.add("l", filter=normal)
    def _live(event: KeyPressEvent) -> None:
        model.live()

    @kb.add("space", filter=normal)
    @kb.add("p", filter=normal)
    def _pause(event: KeyPressEvent) -> None:
        dbg.toggle_pause()

    @kb.add("e", filter=normal)
    def _error(event: KeyPressEvent) -> None:
        if model.jump_to_error():
            panes.focus = "log"
            panes.detail_top = 0
            dbg.message = ""
        else:
            dbg.message = "no error seen"
        model.version += 1

    @kb.add("J", filter=normal)
    def _detail_down(event: KeyPressEvent) -> None:
        panes.scroll_detail(1)

    @kb.add("K", filter=normal)
    def _detail_up(event: KeyPressEvent) -> None:
        panes.scroll_detail(-1)

    @kb.add("a", filter=normal)
    def _add(event: KeyPressEvent) -> None:
        dbg.ask_mutation("add")

    @kb.add("r", filter=normal)
    def _remove(event: KeyPressEvent) -> None:
        dbg.ask_mutation("remove")

    @kb.add("/", filter=normal)
    def _filter(event: KeyPressEvent) -> None:
        dbg.start_filter()

    @kb.add("escape", filter=normal, eager=True)
    def _clear(event: KeyPressEvent) -> None:
        if model.filter_text:
            model.set_filter("")
        dbg.message = ""
        model.version += 1

    @kb.add("escape", filter=filtering, eager=True)
    def _cancel_filter(event: KeyPressEvent) -> None:
        dbg.end_input()

    @kb.add("y", filter=confirming)
    def _yes(event: KeyPressEvent) -> None:
        dbg.confirm(True)

    @kb.add("<any>", filter=confirming)
    def _no(event: KeyPressEvent) -> None:
        dbg.confirm(False)

    return kb
