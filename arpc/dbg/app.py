"""The ``arpc dbg`` full-screen Application: the panes of :mod:`arpc.dbg.layout` in one screen, the keys of
:mod:`arpc.dbg.keys`, and the pump that moves events from the :class:`arpc.dbg.sources.Feed` into the model at
most ``fps`` times a second (one redraw per round, and only when something changed)."""

from __future__ import annotations

import asyncio
import gc
import os
import time as _time
from collections.abc import Callable
from typing import Any

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.filters import Condition
from prompt_toolkit.formatted_text.utils import split_lines
from prompt_toolkit.layout import ConditionalContainer, HSplit, Layout, VSplit, Window
from prompt_toolkit.layout.controls import BufferControl, UIContent, UIControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.mouse_events import MouseEvent, MouseEventType
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.styles import Style

from ..errors import ArpcError
from .keys import build_key_bindings
from .layout import Fragments, Panes, help_text
from .model import Model
from .record import Recorder
from .sources import Feed, LiveSource

FREEZE_AFTER = 3.0  # seconds without a machine followed anew before long-lived objects are frozen (manage_gc)

STYLE = {
    "title": "reverse",
    "title.focused": "reverse bold bg:ansiblue",
    "title.focused.travel": "reverse bold bg:ansimagenta",
    "title.travel": "reverse bg:ansimagenta",
    "selected": "reverse",
    "active": "bold ansigreen",
    "error": "ansired bold",
    "trace": "ansired",
    "canceled": "ansiyellow",
    "down": "ansibrightblack",
    "dim": "ansibrightblack",
    "bold": "bold",
    "status": "reverse",
    "help": "reverse",
    "help.key": "reverse bold",
    "prompt": "bold",
}


class PaneControl(UIControl):
    """A pane drawn by ``render(width, height)``; a click on a line calls that line's handler."""

    def __init__(self, render: Callable[[int, int], Fragments],
                 scroll: Callable[[int], None] | None = None) -> None:
        self.render = render
        self.scroll = scroll  # the wheel: scroll(-1) up, scroll(1) down
        self._lines: list[Fragments] = []

    def create_content(self, width: int, height: int) -> UIContent:
        lines = [list(x) for x in split_lines(self.render(width, height))]
        self._lines = lines
        return UIContent(get_line=lambda i: lines[i] if i < len(lines) else [],
                         line_count=len(lines), show_cursor=False)

    def mouse_handler(self, mouse_event: MouseEvent) -> Any:
        wheel = {MouseEventType.SCROLL_UP: -1, MouseEventType.SCROLL_DOWN: 1}.get(mouse_event.event_type)
        if wheel is not None and self.scroll is not None:
            self.scroll(wheel)
            return None
        y = mouse_event.position.y
        if 0 <= y < len(self._lines):
            for frag in self._lines[y]:
                if len(frag) >= 3:
                    return frag[2](mouse_event)
        return NotImplemented

    def is_focusable(self) -> bool:
        return False


class DbgApp:
    """One ``arpc dbg`` screen over a model fed by ``feed`` (live: ``source`` too; replay: no source)."""

    def __init__(self, model: Model, feed: Feed, *, source: LiveSource | None = None,
                 recorder: Recorder | None = None, color: bool = True, fps: float = 30.0, title: str = "",
                 output: Any = None, input: Any = None) -> None:
        self.model = model
        self.feed = feed
        self.source = source
        self.recorder = recorder
        self.fps = fps
        self.title = title
        self.panes = Panes(model)
        self.mode: str | None = None  # None, "filter" or "confirm"
        self.pending_op: tuple[str, str, str] | None = None  # (add|remove, machine, state) awaiting y/n
        self.message = ""
        self.renders = 0
        self.newest_t = 0.0      # receive time of the newest event applied (for the lag figure)
        self.lag = 0.0           # the last redraw's age of that event
        self.max_lag = 0.0
        self._drawn = -1
        self._gc_gen = -1
        self._gc_due = 0.0
        self._frozen = False
        self.filter_buf = Buffer(multiline=False, accept_handler=self._accept_filter)
        self.app: Application[int] = Application(
            layout=self._layout(), key_bindings=build_key_bindings(self), style=Style.from_dict(STYLE),
            full_screen=True, mouse_support=True,
            color_depth=ColorDepth.DEPTH_8_BIT if color else ColorDepth.DEPTH_1_BIT,
            output=output, input=input, after_render=self._after_render)

    # -- layout -------------------------------------------------------------------------------------------------

    def _layout(self) -> Layout:
        p = self.panes
        editing = Condition(lambda: self.mode == "filter")
        bar = self._bar_window = Window(PaneControl(self._bar), height=1)
        filter_line = VSplit([Window(PaneControl(lambda w, h: [("class:prompt", " filter> ")]), width=9),
                              Window(BufferControl(self.filter_buf), height=1)])
        m = self.model
        top = VSplit([Window(PaneControl(p.list_lines, m.move), width=self._list_width),
                      Window(char="│", width=1, style="class:dim"),
                      Window(PaneControl(p.board_lines, p.move_state))], height=Dimension(min=5, weight=4))
        body = HSplit([
            top,
            Window(PaneControl(p.log_lines, m.travel), height=Dimension(min=3, weight=3)),
            Window(PaneControl(p.detail_lines, p.scroll_detail), height=Dimension(min=3, weight=3)),
            Window(PaneControl(lambda w, h: p.status_text(w, self._status_extra())), height=1),
            ConditionalContainer(bar, filter=~editing),
            ConditionalContainer(filter_line, filter=editing),
        ])
        return Layout(body, focused_element=bar)

    def _list_width(self) -> Dimension:
        """Wide enough for the longest id (with its marks and tree indent), within 16..40 columns."""
        longest = max((len(mid) for mid in self.model.machines), default=10)
        width = min(40, max(16, longest + 10))
        return Dimension(min=16, preferred=width, max=width)

    def _bar(self, width: int, height: int) -> Fragments:
        if self.mode == "confirm" and self.pending_op is not None:
            op, mid, state = self.pending_op
            return [("class:prompt", f" {op} {state} {'to' if op == 'add' else 'from'} {mid}? [y/N]".ljust(width))]
        return help_text(width)

    def _status_extra(self) -> str:
        parts = [self.title] if self.title else []
        if self.source is not None and not self.model.machines:
            parts.append(f"connecting to {len(self.source.session.addresses)} addresses")
        if self.recorder is not None:
            parts.append(f"rec {self.recorder.count}")
        if self.source is not None and self.source.error and not self.message:
            parts.append(self.source.error)
        if self.message:
            parts.append(self.message)
        return " │ ".join(parts)

    # -- actions (called by the keys) ---------------------------------------------------------------------------

    def start_filter(self) -> None:
        self.mode = "filter"
        self.filter_buf.text = self.model.filter_text
        self.filter_buf.cursor_position = len(self.filter_buf.text)
        self.app.layout.focus(self.filter_buf)

    def _accept_filter(self, buf: Buffer) -> bool:
        try:
            self.model.set_filter(buf.text)
            self.message = ""
        except ArpcError as e:
            self.message = e.msg
        self.end_input()
        return False

    def end_input(self) -> None:
        self.mode = None
        self.pending_op = None
        self.app.layout.focus(self._bar_window)
        self.model.version += 1

    def ask_mutation(self, op: str) -> None:
        mv = self.model.current
        state = self.panes.selected_state()
        if mv is None or state is None:
            return
        if self.source is None:
            self.message = "replay: read-only"
            self.model.version += 1
            return
        self.pending_op = (op, mv.id, state)
        self.mode = "confirm"
        self.model.version += 1

    def confirm(self, yes: bool) -> None:
        op = self.pending_op
        self.mode = None
        self.pending_op = None
        self.model.version += 1
        if not yes or op is None or self.source is None:
            self.message = "canceled" if op is not None else ""
            return
        source = self.source
        self.message = f"{op[0]} {op[2]} on {op[1]}..."

        async def run() -> None:
            loop = asyncio.get_running_loop()
            self.message = await loop.run_in_executor(None, source.mutate, op[1], op[0], op[2])
            self.model.version += 1

        self.app.create_background_task(run())

    def toggle_pause(self) -> None:
        if self.model.paused:
            self.model.resume()
        else:
            self.model.pause()

    # -- the pump -----------------------------------------------------------------------------------------------

    def pump(self) -> bool:
        """Move queued events into the model (and the recording); True when the screen must be redrawn."""
        if self.source is not None:
            self.source.want_history(self.model.selected)
        events = self.feed.drain()
        if events:
            if self.recorder is not None:
                try:
                    self.recorder.write(events)
                except (OSError, ValueError) as e:  # e.g. disk full: the screen goes on without the recording
                    self.message = f"recording stopped: {e}"
                    self.recorder.close()
                    self.recorder = None
            feed = self.model.feed
            for ev in events:
                try:
                    feed(ev)
                except (TypeError, ValueError, AttributeError, KeyError):  # a malformed event is counted, skipped
                    self.model.bad += 1
            t = events[-1].get("t")
            if isinstance(t, float) and not self.model.paused:
                self.newest_t = t
        return self.model.version != self._drawn

    def manage_gc(self, now: float) -> None:
        """Keep the garbage collector's full collections short: once the machines are followed (nothing new for
        :data:`FREEZE_AFTER` seconds), collect once and freeze what is alive (mirrors, views, the screen); the
        records come and go as tuples it does not track. Following anew unfreezes first, so that the mirrors
        replaced after a reconnect can be collected."""
        gen = self.source.generation if self.source is not None else 0
        if gen != self._gc_gen:
            self._gc_gen = gen
            self._gc_due = now + FREEZE_AFTER
            if self._frozen:
                gc.unfreeze()
                self._frozen = False
        elif self._gc_due and now >= self._gc_due:
            self._gc_due = 0.0
            gc.collect()
            gc.freeze()
            self._frozen = True

    async def _pump_loop(self) -> None:
        # the one place events become redraws: at most fps a second, however many events arrive (keys redraw at
        # once on their own)
        period = 1.0 / self.fps
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            self.manage_gc(start)
            if self.pump():
                self.app.invalidate()
            await asyncio.sleep(max(0.005, period - (loop.time() - start)))

    def _after_render(self, _app: Any) -> None:
        self._drawn = self.model.version
        self.renders += 1
        if self.newest_t:
            self.lag = _time.time() - self.newest_t
            self.max_lag = max(self.max_lag, self.lag)
            self.newest_t = 0.0

    def run(self) -> int:
        """Run until quit; the exit code."""
        def pre_run() -> None:
            self.app.create_background_task(self._pump_loop())

        try:
            code = self.app.run(pre_run=pre_run)
        finally:
            if self._frozen:
                gc.unfreeze()
                self._frozen = False
            if self.recorder is not None:
                self.recorder.close()
        return int(code or 0)


def no_color(env: dict[str, str] | None = None) -> bool:
    """NO_COLOR (any value) asks for no colours."""
    return bool((os.environ if env is None else env).get("NO_COLOR"))
