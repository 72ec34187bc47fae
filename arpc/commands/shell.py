"""The shell's own commands: ``script``, ``cheatsheet``, ``connect``, ``help``, ``exit``."""

from __future__ import annotations

import click

from ..errors import CONNECTION, INTERRUPTED, OK, ExitRepl, Failed, NotConnected, UsageError
from ..format import Result, status_lines
from ..session import parse_address
from .dispatch import run_line
from .registry import Cx, cheatsheet_lines, command, help_lines, lookup

MAX_SCRIPT_DEPTH = 8


@command("script", "REPL", {"file": "file"}, synopsis="FILE [-k]",
         short_help="run commands from FILE, stop at the first failure")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-k", "--keep-going", is_flag=True, help="Run every line; exit with the first failure's code.")
def cmd_script(cx: Cx, file: str, keep_going: bool) -> Result:
    """Run FILE: one command a line, # comments; stops at the first failure and exits with its code."""
    if cx.depth >= MAX_SCRIPT_DEPTH:
        raise Failed(f"scripts nested too deep: {file}")
    try:
        with open(file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise Failed(f"cannot read script: {file}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise Failed(f"cannot read script: {file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    first_err = OK
    cx.depth += 1
    outer = cx.where
    try:
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cx.where = f"{file}:{number}"
            try:
                code = run_line(cx, line)
            except ExitRepl:
                break
            if code != OK:
                if not keep_going or code == INTERRUPTED:  # Ctrl+C stops a script, --keep-going or not
                    return Result([], None, code)
                first_err = first_err or code
    finally:
        cx.depth -= 1
        cx.where = outer
    return Result([], None, first_err)


@command("cheatsheet", "REPL", short_help="this list: one line per command, with tips")
def cmd_cheatsheet(cx: Cx) -> Result:
    """One line per command, with tips."""
    return Result.text(cheatsheet_lines())


@command("connect", "REPL", {"address": "address"}, synopsis="[ADDR | @NAME]",
         short_help="connect ADDR or a named connection; alone: retry, and list each address with its state")
@click.argument("address", required=False, metavar="[ADDR | @NAME]")
def cmd_connect(cx: Cx, address: str | None) -> Result:
    """Connect ADDR (host:port or a URI), or @NAME, a connection of the config file (its addresses and key
    files); an address that does not connect is not kept. Without ADDR, retry every address that is not
    connected, and list each address with its state and last error."""
    s = cx.session
    if address is not None and address.startswith("@"):
        return _connect_named(cx, address[1:])
    if address is not None:
        addr = parse_address(address)  # a malformed address: a usage error, nothing kept
        known = addr in s.addresses
        link = s.add_address(addr)
        s.reconnect()
        if not link.connected:
            if not known:
                s.remove_address(addr)
            raise NotConnected(link.failure())
        ids = [i["id"] for i in link.infos]
        return Result([f"connected to {link.address}: {' '.join(ids) or '(no machines)'}"],
                      {"address": link.address, "machines": ids})
    s.opened = True
    st = s.reconnect()
    links = s.links()
    lines = status_lines(st.connected, st.connecting, st.disconnected, st.total)
    lines.extend(link.line() for link in links)
    return Result(lines, {"connected": st.connected, "connecting": st.connecting, "disconnected": st.disconnected,
                          "total": st.total,
                          "addresses": [link.summary() for link in links]},
                  OK if st.connected else CONNECTION)


def _connect_named(cx: Cx, name: str) -> Result:
    """``connect @name``: every address of the config file's connection, with its key files; the addresses that
    do not connect are not kept (unless known before)."""
    from ..settings import ConfigError, named_connection

    s = cx.session
    try:
        addrs, settings = named_connection(name)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    own = settings["server_key"].source.startswith("@") or settings["client_key"].source.startswith("@")
    known = set(s.addresses)
    links = []
    for a in addrs:
        addr = parse_address(a)
        if own:
            s.keys[addr] = (settings["server_key"].value, settings["client_key"].value)
        links.append(s.add_address(addr))
    s.reconnect()
    lines, failed, data = [], [], []
    for link in links:
        ids = [i["id"] for i in link.infos] if link.connected else []
        data.append({"address": link.address, "state": link.state, "machines": ids, "error": link.error})
        if link.connected:
            lines.append(f"connected to {link.address}: {' '.join(ids) or '(no machines)'}")
        else:
            failed.append(link.failure())
            if link.address not in known:
                s.remove_address(link.address)
                s.keys.pop(link.address, None)
    if not lines:
        raise NotConnected("; ".join(failed))
    return Result([*lines, *failed], {"connection": name, "addresses": data}, CONNECTION if failed else OK)


@command("help", "REPL", {"name": "command"}, synopsis="[COMMAND]",
         short_help="groups and commands / one command's help")
@click.argument("name", required=False, metavar="[COMMAND]")
def cmd_help(cx: Cx, name: str | None) -> Result:
    """The commands by group, or the help of COMMAND."""
    if name is not None:
        cmd = lookup(name)
        if cmd is None:
            raise UsageError(f"unknown command: {name}")
        with click.Context(cmd, info_name=name) as ctx:
            return Result.text(cmd.get_help(ctx).splitlines())
    return Result.text(help_lines())


@command("exit", "REPL", short_help="leave the REPL (quit, \\q and Ctrl+D do too)")
def cmd_exit(cx: Cx) -> Result:
    """Leave the REPL (quit, \\q and Ctrl+D do too)."""
    raise ExitRepl(OK)


@command("completion", "REPL", synopsis="bash|zsh|fish", short_help="print the shell's completion script")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), metavar="SHELL")
def cmd_completion(cx: Cx, shell: str) -> Result:
    """Print the completion script of SHELL, e.g. eval "$(arpc completion bash)" (no connection needed)."""
    from ..shell_completion import script

    text = script(shell)
    return Result(text.rstrip("\n").split("\n"), {"shell": shell, "script": text}, raw=True)
