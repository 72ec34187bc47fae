"""The command line of ``arpc dbg``: ``arpc dbg [ADDR]... [-d DIR] [-f FILE] [keys] [--record FILE]`` follows live
machines; ``arpc dbg --replay FILE`` opens a recording offline."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from ..errors import ArpcError, UsageError
from ..format import Printer
from .model import MAX_RECORDS, Model

EPILOG = """\b
Keys: arrows/j/k move, Tab next pane, / filter (the `list` filters: -a/-i STATE, -P PARENT, -r RE,
-I/-p/-s TEXT, --tag TAG, or words the id contains), <- -> time travel, l live, Space pause, e last error,
a/r add/remove the selected state (asks y/N), J/K scroll the detail, q quit. Mouse clicks select.
Exit codes: 0 ok, 2 usage (bad option, unreadable --replay file), 3 connection."""


@click.command("arpc dbg", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                            "max_content_width": 110})
@click.argument("addrs", nargs=-1, metavar="[ADDR]...")
@click.option("-d", "--dir", "dir_", metavar="DIR", help="Follow every *.addr file in DIR (watched).")
@click.option("-f", "--file", metavar="FILE", help="Read one address from FILE (watched).")
@click.option("--connect-timeout", type=click.FloatRange(min=0.01, max=3600), default=2.0, metavar="SEC",
              show_default=True, help="How long to wait for the first connections.")
@click.option("--server-key", metavar="FILE", envvar="ARPC_SERVER_KEY", help="CURVE: the server's public key file.")
@click.option("--client-key", metavar="FILE", envvar="ARPC_CLIENT_KEY", help="CURVE: this client's secret key file.")
@click.option("--record", metavar="FILE", help="Write every event received to FILE (JSON lines).")
@click.option("--replay", metavar="FILE", help="Open a --record FILE offline (no connection).")
@click.option("--records", type=click.IntRange(10, 100_000), default=MAX_RECORDS, show_default=True, metavar="N",
              help="Transitions kept per machine.")
@click.option("--no-color", is_flag=True, help="No colours (NO_COLOR is honoured too).")
def dbg_command(**kw: Any) -> dict[str, Any]:
    """A live full-screen inspector of the machines behind the addresses."""
    return kw


def parse(args: Sequence[str]) -> dict[str, Any] | int:
    from ..cli import parse_click  # the entry point that runs dbg, loaded already

    opts = parse_click(dbg_command, "arpc dbg", args)
    assert isinstance(opts, (dict, int))
    return opts


def run(args: Sequence[str]) -> int:
    """``arpc dbg ARGS``: the screen until quit; the exit code."""
    opts = parse(args)
    if isinstance(opts, int):
        return opts
    printer = Printer()
    try:
        return _run(opts)
    except ArpcError as e:
        printer.error(e)
        return e.code
    except KeyboardInterrupt:
        return 130


def _run(o: dict[str, Any]) -> int:
    from .sources import Feed

    color = not o["no_color"] and not os.environ.get("NO_COLOR")
    model = Model(max_records=o["records"])
    feed = Feed()
    if o["replay"] is not None:
        if o["addrs"] or o["dir_"] or o["file"] or o["record"]:
            raise UsageError("--replay opens a file offline: no addresses, -d, -f or --record with it")
        from .record import ReplayError, read_replay

        # a bad file is refused before the screen opens
        for i, ev in enumerate(read_replay(o["replay"])):
            try:
                model.apply(ev)
            except (TypeError, ValueError, AttributeError, KeyError) as e:
                raise ReplayError(f"{o['replay']}: line {i + 2} is not a valid event ({e})") from None
        return _screen(model, feed, None, None, color, f"replay {os.path.basename(o['replay'])}")
    if not o["addrs"] and o["dir_"] is None and o["file"] is None:
        raise UsageError("no address given (ADDR, -d DIR or -f FILE); `arpc dbg --help` for usage")
    if o["dir_"] is not None and o["file"] is not None:
        raise UsageError("-f/--file and -d/--dir cannot be used together")
    from ..session import Session
    from .sources import LiveSource

    connector = None
    if o["server_key"] or o["client_key"]:
        from ..cli import _curve_connector

        connector = _curve_connector(o["server_key"], o["client_key"])
    # not eager: the live source makes the mirrors, up to its cap of machines
    session = Session(connector=connector, connect_timeout=o["connect_timeout"])
    try:
        session.load(o["addrs"], file=o["file"], directory=o["dir_"])
    except ArpcError as e:
        if not (o["dir_"] is not None and "no .addr files" in e.msg):
            raise
    recorder = None
    if o["record"] is not None:
        from .record import Recorder

        recorder = Recorder(o["record"], session.addresses)
    source = LiveSource(session, feed, backlog=min(o["records"], 1000))
    try:
        source.start()
        return _screen(model, feed, source, recorder, color, "")
    finally:
        source.close()
        if recorder is not None:
            recorder.close()


def _screen(model: Model, feed: Any, source: Any, recorder: Any, color: bool, title: str) -> int:
    if not sys.stdout.isatty():
        raise UsageError("arpc dbg needs a terminal (stdout is not one)")
    from .app import DbgApp

    return DbgApp(model, feed, source=source, recorder=recorder, color=color, title=title).run()
