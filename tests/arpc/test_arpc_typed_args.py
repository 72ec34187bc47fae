"""Declared args against a daemon process: the declaration reaches the listing and the mirrors, ``--val`` becomes
the declared type (a bad value is exit 2 naming the arg, nothing changes), ``--json-val`` for undeclared args,
``when-args`` compares typed, and the REPL completer offers the declared names."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from arpc_e2e import Daemon, arpc, arpc_bg
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from arpc.completer import ArpcCompleter
from arpc.session import Session
from machine import Arg, declared_args
from transport import connect


@pytest.fixture
def d(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path / "addrs", "--hub", "--typed")
    yield daemon
    daemon.stop()


def _a(d: Daemon, *cmd: str) -> tuple[int, str, str]:
    r = arpc("-d", str(d.dir), "--", *cmd)
    return r.code, r.out, r.err


def test_the_declaration_reaches_the_listing_and_the_mirror(d: Daemon) -> None:
    with connect(d.addr("worker0")) as c:
        listed = {m["id"]: m for m in c.machines()}
        assert listed["worker0"]["args"]["job"] == {"type": "int", "help": "job number"}
        assert listed["worker0"]["args"]["blob"] == {"type": "bytes"}
        rm = c.machine("worker0")
        assert rm.schema["Foo"].args["ratio"] == Arg(float)
        assert rm.schema["Bar"].args == {"job": Arg(int, "job number")}
        assert declared_args(rm)["meta"] == Arg("json", "anything JSON")
        assert rm.schema["Start"].args == {}
        rm.close()


def test_val_becomes_the_declared_type(d: Daemon) -> None:
    code, out, err = _a(d, "add", "worker0", "Foo", "--arg", "job", "--val", "2", "--arg", "ratio", "--val", "0.5",
                        "--arg", "ok", "--val", "Yes", "--arg", "name", "--val", "7", "--arg", "blob", "--val", "hi",
                        "--arg", "meta", "--val", '{"a": [1]}', "--arg", "free", "--val", "3",
                        "--arg", "n", "--json-val", "[3, null]")
    assert (code, out.strip()) == (0, "executed"), err
    seen = json.loads(d.cmd("argtypes worker0 Foo"))
    assert seen == {"job": ["int", "2"], "ratio": ["float", "0.5"], "ok": ["bool", "True"], "name": ["str", "'7'"],
                    "blob": ["bytes", "b'hi'"], "meta": ["dict", "{'a': [1]}"], "free": ["str", "'3'"],
                    "n": ["list", "[3, None]"]}


def test_json_val_and_val_pair_in_line_order(d: Daemon) -> None:
    code, _, err = _a(d, "add", "worker1", "Foo", "--arg", "a", "--json-val", "1", "--arg", "b", "--val", "x",
                      "--arg", "c", "--json-val", '"y"', "--arg", "job", "--json-val", "4")
    assert code == 0, err
    seen = json.loads(d.cmd("argtypes worker1 Foo"))
    assert seen == {"a": ["int", "1"], "b": ["str", "'x'"], "c": ["str", "'y'"], "job": ["int", "4"]}


@pytest.mark.parametrize(("pair", "message"), [
    (("--arg", "job", "--val", "two"), "--val of arg job: not an int: 'two'"),
    (("--arg", "ratio", "--val", "1/2"), "--val of arg ratio: not a float: '1/2'"),
    (("--arg", "ok", "--val", "maybe"), "--val of arg ok: not a bool (true/false): 'maybe'"),
    (("--arg", "meta", "--val", "{a"), "--val of arg meta: not JSON: '{a'"),
    (("--arg", "job", "--json-val", '"2"'), "--json-val of arg job: not an int: '\"2\"'"),
    (("--arg", "free", "--json-val", "nope"), "--json-val of arg free: not JSON"),
])
def test_a_bad_value_is_a_usage_error_naming_the_arg_and_changes_nothing(d: Daemon, pair: tuple[str, ...],
                                                                         message: str) -> None:
    before = _a(d, "time", "worker2")[1]
    code, out, err = _a(d, "add", "worker2", "Foo", *pair)
    assert code == 2 and out == "" and message in err, err
    assert _a(d, "time", "worker2")[1] == before
    assert d.cmd("argtypes worker2 Foo") == "{}"


def test_group_add_converts_for_every_machine(d: Daemon) -> None:
    code, out, err = _a(d, "group-add", "Bar", "--arg", "job", "--val", "5")
    assert code == 0, err
    assert json.loads(d.cmd("argtypes worker2 Bar")) == {"job": ["int", "5"]}


def _when_args_against(d: Daemon, mach: str, pairs: list[str], sources: list[str]) -> tuple[int, str, str]:
    """``when-args`` in the background while the daemon repeats ``sources`` (the first must not match)."""
    p = arpc_bg("-d", str(d.dir), "--", "when-args", mach, "Foo", *pairs, "--timeout", "20s")
    stop = threading.Event()

    def source() -> None:  # repeats until the command is done (bounded): it may start following at any time
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            if stop.wait(0.01) or p.poll() is not None:
                return
            for line in sources:
                d.cmd(line)
            d.cmd(f"remove {mach} Foo")

    t = threading.Thread(target=source)
    t.start()
    try:
        out, err = p.communicate(timeout=30)
    finally:
        stop.set()
        t.join(10)
    return p.returncode, out, err


def test_when_args_compares_declared_args_typed(d: Daemon) -> None:
    # job is declared int: a source's job="2" (a string) does not match, job=2 does
    code, out, err = _when_args_against(d, "worker1", ["--arg", "job", "--val", "2"], [
        'addjson worker1 Foo {"job": "2"}', "remove worker1 Foo", 'addjson worker1 Foo {"job": 2, "x": 1}'])
    assert code == 0, err
    tick = int(out.strip())
    recs = json.loads(arpc("-d", str(d.dir), "--json", "--", "log", "worker1").out)["records"]
    foo = 2  # Foo's index in the fixture's schema
    assert tick in {r["ticks"][foo] for r in recs if (r.get("args") or {}).get("x") == 1}
    assert tick not in {r["ticks"][foo] for r in recs if (r.get("args") or {}).get("job") == "2"}


def test_when_args_json_val_matches_exactly(d: Daemon) -> None:
    # an undeclared arg: --json-val 2 matches 2, not "2" (which --val 2 would match by text)
    code, out, err = _when_args_against(d, "worker2", ["--arg", "n", "--json-val", "2"], [
        'addjson worker2 Foo {"n": "2", "x": 0}', "remove worker2 Foo", 'addjson worker2 Foo {"n": 2, "x": 1}'])
    assert code == 0, err
    tick = int(out.strip())
    recs = json.loads(arpc("-d", str(d.dir), "--json", "--", "log", "worker2").out)["records"]
    assert tick in {r["ticks"][2] for r in recs if (r.get("args") or {}).get("x") == 1}
    assert tick not in {r["ticks"][2] for r in recs if (r.get("args") or {}).get("x") == 0}


def test_repl_completion_offers_the_declared_args(d: Daemon) -> None:
    s = Session(eager=True)
    s.load([d.addr("worker0")])
    s.open()
    try:
        comp = ArpcCompleter(s)

        def complete(text: str) -> list[tuple[str, str]]:
            return [(c.text, c.display_meta_text) for c in comp.get_completions(
                Document(text, len(text)), CompleteEvent(completion_requested=True))]

        got = complete("add worker0 Foo --arg ")
        assert got[:6] == [("job", "int: job number"), ("ratio", "float"), ("ok", "bool: all good"),
                           ("name", "str"), ("blob", "bytes"), ("meta", "json: anything JSON")]
        assert [t for t, _ in complete("add worker0 Foo --arg job --val 1 --arg ")][:5] == [
            "ratio", "ok", "name", "blob", "meta"]
        assert [t for t, _ in complete("add worker0 Foo --arg ok --val ")] == ["true", "false"]
        assert [t for t, _ in complete("group-add Foo --arg j")] == ["job"]
        assert "--json-val" in [t for t, _ in complete("add worker0 Foo --")]
    finally:
        s.close()


def test_in_the_repl_tab_completes_a_declared_arg_and_a_bad_value_names_it(d: Daemon, tmp_path: Path) -> None:
    from test_arpc_repl_pty import ERR, PROMPT, RESULT, spawn

    p = spawn(["-m", "arpc", "--connect-timeout", "2", d.addr("worker0")], tmp_path, NO_COLOR="1")
    try:
        p.expect(PROMPT)
        p.send("add worker0 Foo --arg jo\t")  # completes to `job` (declared; nothing typed before)
        p.send(" --val two\r")
        p.expect(ERR + re.escape("--val of arg job: not an int: 'two'"))
        p.expect(PROMPT)
        p.sendline("add worker0 Foo --arg job --val 7")
        p.expect(RESULT + "executed")
        p.expect(PROMPT)
        p.sendline("exit")
        p.expect(pexpect.EOF)
    finally:
        p.close(force=True)
    assert json.loads(d.cmd("argtypes worker0 Foo")) == {"job": ["int", "7"]}
