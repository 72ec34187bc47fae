"""``arpc``: the entry point. ``arpc [OPTIONS] ADDR... [-- COMMAND ARGS...]``.

Without ``--`` it opens the REPL (prompt_toolkit and pygments are imported only then); with ``--`` it runs one
command of :mod:`arpc.commands` and exits with its code. Imports here are kept minimal for a fast cold start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from . import __version__
from .errors import FAILED, INTERRUPTED, OK, USAGE, ArpcError, ExitRepl, NotConnected, UsageError
from .format import Printer
from .record import record as dataclass
from .session import Connector, Session

USAGE_LINE = "arpc [OPTIONS] [ADDR]... [-- COMMAND [ARGS]...]"
EPILOG = """\b
Without `--`, opens the REPL on the machines behind the addresses.
With `-- COMMAND ARGS`, runs one command and exits:
  arpc -d /tmp/addrs -- list
  arpc 127.0.0.1:7101 -- add . Foo --arg k --val v
  arpc 127.0.0.1:7101 -- when worker0 Ready --timeout 5s
`arpc ADDR -- help` lists the commands.
`arpc demo` starts live demo machines in this process and opens the REPL on them
(ARPC_DEMO_SPEED=0.2 makes them five times faster).
`arpc keygen DIR [--name NAME]` writes a CURVE key pair (NAME.key, NAME.key_secret) for --client-key and
the server's expose(curve=..., allow=...).
`arpc dbg [ADDR]... [-d DIR] [--record FILE]` opens a live full-screen inspector; `arpc dbg --replay FILE`
replays a recording (`arpc dbg --help`).
With no address, ARPC_ADDR (addresses), else AM_REPL_ADDR and AM_REPL_DIR are used.
`arpc ADDR -r 0 -i 1 -- time .` repeats a command every second until Ctrl+C.
`arpc grafana [MACH]... [-o FILE]` writes a Grafana dashboard for the metrics of expose(..., metrics=ADDR).
`arpc config [@NAME]` prints the effective settings and where each came from ($XDG_CONFIG_HOME/arpc/config.toml
holds [defaults] and [connections.NAME]; `arpc @NAME -- list` connects a named connection).
`arpc completion bash|zsh|fish` prints the shell's completion script (e.g. eval "$(arpc completion bash)").
Exit codes: 0 ok, 1 failed, 2 usage, 3 connection, 4 canceled, 124 timeout, 130 interrupted."""


@dataclass
class Options:
    addrs: tuple[str, ...] = ()
    file: str | None = None
    dir: str | None = None
    watch: bool = True
    req_all: bool = False
    connect_timeout: float = 1.0
    log_level: int = 0
    no_color: bool = False
    json: bool = False
    server_key: str | None = None
    client_key: str | None = None
    keep_going: bool = False
    repeat: int = 1
    interval: float = 1.0


class _Root(click.Command):
    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage("arpc", USAGE_LINE[len("arpc "):])


def _version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"arpc {__version__}")
        ctx.exit(0)


def _seconds(value: float, flag: str = "--connect-timeout") -> float:
    """A duration in seconds: finite and above zero (nan, inf and negatives are usage errors)."""
    if not 0 < value < float("inf"):  # false for nan too
        raise click.BadParameter(f"{value} is not a number of seconds above 0", param_hint=f"'{flag}'")
    return value


ENV_HELP = "ADDR, -d DIR, -f FILE, or ARPC_ADDR / AM_REPL_ADDR / AM_REPL_DIR in the environment"


def _env_addresses(opts: Options, env: Mapping[str, str]) -> None:
    """No address on the command line: ``ARPC_ADDR`` (addresses, separated by spaces or commas), else
    ``AM_REPL_ADDR`` (one address) and ``AM_REPL_DIR`` (a directory of addr files)."""
    if opts.addrs or opts.file is not None or opts.dir is not None:
        return
    listed = env.get("ARPC_ADDR", "").replace(",", " ").split()
    if listed:
        opts.addrs = tuple(listed)
        return
    one = env.get("AM_REPL_ADDR", "").strip()
    if ":" in one:  # asyncmachine-go also takes "1" (pick a port): not an address to connect to
        opts.addrs = (one,)
    if env.get("AM_REPL_DIR", "").strip():
        opts.dir = env["AM_REPL_DIR"].strip()


@click.command("arpc", cls=_Root, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                                   "max_content_width": 110})
@click.argument("addrs", nargs=-1, metavar="[ADDR]...")
@click.option("-f", "--file", metavar="FILE", help="Read one address from FILE (watched for changes).")
@click.option("-d", "--dir", "dir_", metavar="DIR", help="Connect every *.addr file in DIR (watched).")
@click.option("-w/-W", "--watch/--no-watch", default=True, help="Watch -d/-f for new or changed addresses.")
@click.option("-a", "--req-all", is_flag=True, help="Fail (exit 3) unless every address connects.")
@click.option("--connect-timeout", type=float, default=1.0, metavar="SEC", show_default=True,
              callback=lambda _c, _p, v: _seconds(v), help="How long to wait for connections.")
@click.option("--log-level", type=click.IntRange(0, 5, clamp=True), default=0, metavar="0-5",
              help="Log level of machines and transport (on stderr).")
@click.option("--no-color", is_flag=True, help="No colours (NO_COLOR is honoured too).")
@click.option("--json", "json_", is_flag=True, help="One JSON document per result; errors as JSON on stderr.")
@click.option("--server-key", metavar="FILE", envvar="ARPC_SERVER_KEY",
              help="CURVE: the server's public key file (env ARPC_SERVER_KEY).")
@click.option("--client-key", metavar="FILE", envvar="ARPC_CLIENT_KEY",
              help="CURVE: this client's secret key file, from `arpc keygen` (env ARPC_CLIENT_KEY).")
@click.option("-k", "--keep-going", is_flag=True,
              help="Commands from a pipe or file (stdin not a terminal): run every line, not only up to the first "
                   "failure; the exit code is the first failure's.")
@click.option("-r", "--repeat", type=click.IntRange(min=0), default=1, metavar="COUNT",
              help="One-shot: run the command COUNT times (0: until Ctrl+C), e.g. -r 0 -i 1 -- time .")
@click.option("-i", "--interval", type=float, default=1.0, metavar="SEC", callback=lambda _c, _p, v: _seconds(v, "-i"),
              help="Seconds between the runs of -r (default 1).")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Print the version and exit.")
def root(addrs: tuple[str, ...], file: str | None, dir_: str | None, watch: bool, req_all: bool,
         connect_timeout: float, log_level: int, no_color: bool, json_: bool, server_key: str | None,
         client_key: str | None, keep_going: bool, repeat: int, interval: float) -> Options:
    """aRPC: a shell and one-shot CLI for remote asyncmachine machines."""
    return Options(addrs, file, dir_, watch, req_all, connect_timeout, log_level, no_color, json_, server_key,
                   client_key, keep_going, repeat, interval)


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Split at the first ``--``: root arguments, and the command (None: REPL mode)."""
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def parse_click(cmd: click.Command, prog: str, args: Sequence[str]) -> Any:
    """What ``cmd``'s callback returns for ``args``, or an exit code: help and version (0), a usage error
    (printed, ``USAGE``)."""
    try:
        ctx = cmd.make_context(prog, list(args))
        with ctx:
            return cmd.invoke(ctx)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.UsageError as e:
        Printer().error(UsageError(e.format_message()))
        return USAGE


def parse_root(args: list[str]) -> Options | int:
    """The root options, or an exit code (help, version, usage error)."""
    opts = parse_click(root, "arpc", args)
    assert isinstance(opts, (Options, int))
    return opts


def _setup_logging(level: int) -> None:
    if level <= 0:
        return
    import logging

    os.environ.setdefault("AM_LOG", str(level))
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if level >= 3 else logging.INFO,
                        format="%(name)s %(message)s")


def _cli_open(session: Session, printer: Printer, req_all: bool, detail: bool = False) -> None:
    if not session.addresses:
        raise UsageError(f"no address given ({ENV_HELP})")
    st = session.open()
    if st.connected == 0:
        lines = session.failures(detail) or ["not connected"]
        for line in lines[:-1]:
            printer.error(NotConnected(line))
        raise NotConnected(lines[-1])
    if st.connected < st.total:
        if detail:
            for line in session.failures(detail):
                printer.warn(line)
        if req_all:
            raise NotConnected(f"partial connection ({st.connected}/{st.total}) and --req-all")
        printer.warn(f"partial connection ({st.connected}/{st.total}), executing")


def run(argv: Sequence[str] | None = None, *, connector: Connector | None = None,
        session: Session | None = None) -> int:
    """Run arpc with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    ``connector`` (``fn(address, timeout) -> client``) and ``session`` (pre-built, e.g. with local machines) are
    for tests and embedding."""
    root_args, cmd = split_argv(sys.argv[1:] if argv is None else argv)
    if root_args[:1] == ["keygen"]:
        return _run_keygen(root_args[1:])
    if root_args[:1] == ["dbg"] and cmd is None:
        from .dbg import run_dbg

        return run_dbg(root_args[1:])
    if root_args[:1] == ["grafana"] and cmd is None:
        return _run_grafana(root_args[1:])
    if root_args[:1] == ["config"] and cmd is None:
        return _run_config(root_args[1:])
    if root_args[:1] == ["completion"] and cmd is None:
        return _run_completion(root_args[1:])
    demo = bool(root_args) and root_args[0] == "demo"
    parsed = parse_root(root_args[1:] if demo else root_args)
    if isinstance(parsed, int):
        return parsed
    opts = parsed
    if demo:
        return _run_demo(opts, cmd, connector)
    if session is None:
        from .settings import ConfigError, apply_config

        try:
            apply_config(opts, Options())  # @name and the config file; the environment after them
        except ConfigError as e:
            Printer().error(UsageError(str(e)))
            return USAGE
    repl = cmd is None
    color = repl and not opts.no_color and not os.environ.get("NO_COLOR") and sys.stdout.isatty()
    printer = Printer(repl=repl, json_mode=opts.json, color=color)
    if opts.file is not None and opts.dir is not None:
        printer.error(UsageError("-f/--file and -d/--dir cannot be used together"))
        return USAGE
    if session is None:
        _env_addresses(opts, os.environ)
    if repl and session is None and not opts.addrs and opts.file is None and opts.dir is None:
        printer.error(UsageError(f"no address given ({ENV_HELP}); `arpc --help` for usage"))
        return USAGE
    _setup_logging(opts.log_level)
    own = session is None
    if session is None:
        if connector is None and (opts.server_key or opts.client_key):
            connector = _curve_connector(opts.server_key, opts.client_key)
        session = Session(connector=connector, connect_timeout=opts.connect_timeout, eager=repl)
        session.curve = bool(opts.server_key or opts.client_key)
    try:
        try:
            session.load(opts.addrs, file=opts.file, directory=opts.dir)
        except ArpcError as e:
            if not (repl and opts.dir is not None and "no .addr files" in e.msg):
                printer.error(e)
                return e.code
            printer.warn(f"{e.msg} (watching)")
        if repl and not sys.stdin.isatty():
            from .piped import run_piped

            return run_piped(session, printer, keep_going=opts.keep_going, detail=opts.log_level > 0)
        if repl:
            from .repl import run_repl

            return run_repl(session, printer, opts)
        assert cmd is not None
        if not cmd:
            printer.error(UsageError("missing command after --"))
            return USAGE
        return _repeat(opts, lambda: run_command(session, printer, cmd, req_all=opts.req_all,
                                                 detail=opts.log_level > 0))
    except KeyboardInterrupt:
        printer.error(ArpcError("interrupted", INTERRUPTED))
        return INTERRUPTED
    finally:
        if own:
            session.close()


def _repeat(opts: Options, once: Callable[[], int]) -> int:
    """``-r COUNT -i SEC``: run a one-shot command COUNT times (0: until Ctrl+C); the first failure's code."""
    import time

    first, n = OK, 0
    while True:
        code = once()
        first = first or code
        n += 1
        if code == INTERRUPTED or (opts.repeat and n >= opts.repeat):
            return first
        time.sleep(opts.interval)  # pacing between runs, as redis-cli -i


def _curve_connector(server_key: str | None, client_key: str | None) -> Connector:
    """A connector that speaks CURVE with the given key files (both are needed)."""
    from .session import default_connector

    def connect(address: str, timeout: float) -> Any:
        return default_connector(address, timeout, server_key=server_key, client_keys=client_key)

    return connect


def _run_grafana(args: list[str]) -> int:
    """``arpc grafana [MACH]... [-o FILE] [--title T] [--datasource UID]``: a Grafana dashboard (JSON) for the
    metrics that ``expose(..., metrics=ADDR)`` serves; the machines given are selected when it loads."""
    import json

    from transport.grafana import dashboard

    printer = Printer()
    opts: dict[str, str] = {}
    machs: list[str] = []
    rest = list(args)
    while rest:
        a = rest.pop(0)
        if a in ("-o", "--output", "--title", "--datasource"):
            if not rest:
                printer.error(UsageError(f"{a} needs a value"))
                return USAGE
            opts[a] = rest.pop(0)
        elif a.startswith("-"):
            printer.error(UsageError("usage: arpc grafana [MACH]... [-o FILE] [--title T] [--datasource UID]"))
            return USAGE
        else:
            machs.append(a)
    board = dashboard(machs, title=opts.get("--title", "asyncmachine"),
                      datasource=opts.get("--datasource", "Prometheus"))
    text = json.dumps(board, indent=2) + "\n"
    out = opts.get("-o") or opts.get("--output")
    if out is None:
        sys.stdout.write(text)
        return OK
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        printer.error(ArpcError(f"cannot write {out}: {e.strerror or e}", FAILED))
        return FAILED
    print(f"wrote {out}")
    return OK


def _run_config(args: list[str]) -> int:
    """``arpc config [@NAME] [FLAGS...]``: the effective settings and where each came from."""
    from .settings import ConfigError, apply_config, config_path, describe

    printer = Printer()
    parsed = parse_root(args)
    if isinstance(parsed, int):
        return parsed
    try:
        settings = apply_config(parsed, Options())
    except ConfigError as e:
        printer.error(UsageError(str(e)))
        return USAGE
    sys.stdout.write(f"# config file: {config_path()}\n" + "\n".join(describe(settings)) + "\n")
    return OK


def _run_completion(args: list[str]) -> int:
    """``arpc completion SHELL``: print the shell's completion script."""
    from .shell_completion import SHELLS, script

    if len(args) != 1 or args[0] not in SHELLS:
        Printer().error(UsageError(f"usage: arpc completion {{{','.join(SHELLS)}}}"))
        return USAGE
    sys.stdout.write(script(args[0]))
    return OK


def _run_keygen(args: list[str]) -> int:
    """``arpc keygen DIR [--name NAME]``: write a CURVE key pair (NAME.key, NAME.key_secret, the latter 0600)."""
    printer = Printer()
    name = "arpc"
    rest = list(args)
    if "--name" in rest:
        i = rest.index("--name")
        if i + 1 >= len(rest):
            printer.error(UsageError("--name needs a value"))
            return USAGE
        name = rest[i + 1]
        del rest[i:i + 2]
    if len(rest) != 1 or rest[0].startswith("-"):
        printer.error(UsageError("usage: arpc keygen DIR [--name NAME]"))
        return USAGE
    from transport.security import keygen

    try:
        public, secret = keygen(rest[0], name)
    except OSError as e:
        printer.error(ArpcError(f"keygen: {e}", FAILED))
        return FAILED
    print(f"public key: {public}\nsecret key: {secret}")
    return OK


def _run_demo(opts: Options, cmd: list[str] | None, connector: Connector | None) -> int:
    """``arpc demo``: serve :mod:`arpc.demo`'s machines from this process and run the REPL (or CMD) on them."""
    from .demo import serve

    try:
        speed = float(os.environ.get("ARPC_DEMO_SPEED") or 1.0)
    except ValueError:
        speed = 1.0
    ep = serve(speed=speed)
    try:
        # in-process: it answers, though maybe slowly on a busy machine
        argv = ["--connect-timeout", str(max(opts.connect_timeout, 5.0)), ep.address]
        if opts.json:
            argv.insert(0, "--json")
        if opts.no_color:
            argv.insert(0, "--no-color")
        if opts.log_level:
            argv[:0] = ["--log-level", str(opts.log_level)]
        if cmd is None:
            print(f"Demo: {len(ep.machines)} live machines on {ep.address} (files-1..3 process files, expense-1..3 "
                  "wait for approval, ticker ticks).\nTry: list · watch files-1 · add expense-2 ApprovalGranted · "
                  "when expense-2 PaymentCompleted · inspect ticker · diagram expense-1 · help", flush=True)
        return run([*argv, "--", *cmd] if cmd is not None else argv, connector=connector)
    finally:
        machs = list(ep.machines)
        ep.stop()
        for m in machs:
            m.dispose()


def run_command(session: Session, printer: Printer, words: Sequence[str], *, req_all: bool = False,
                detail: bool = False) -> int:
    """One-shot mode: connect on first use (with the partial-connection rules) and run one command."""
    from .commands import Cx, dispatch

    if session.opener is None:
        session.opener = lambda: _cli_open(session, printer, req_all, detail)
    cx = Cx(session, printer, repl=False)
    try:
        return dispatch(cx, words)
    except ExitRepl:
        return OK
    except BrokenPipeError:
        _silence_stdout()
        return OK


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def main(argv: Sequence[str] | None = None) -> Any:
    """Console-script entry point (``arpc``)."""
    shell = os.environ.get("_ARPC_COMPLETE")
    if shell:  # called back by a completion script (``arpc completion SHELL``)
        from .shell_completion import answer

        code = answer(shell, os.environ.get("_ARPC_LINE", ""))
    else:
        from . import listing

        listing.ONE_SHOT = True  # its listings may be kept out of the cyclic GC (listing.bulk)
        code = run(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    # Everything is flushed and closed: skip the interpreter's teardown (module GC, the ZeroMQ context,
    # daemon threads), which costs tens of milliseconds of a one-shot command's start-to-exit time.
    os._exit(code)


if __name__ == "__main__":
    main()
