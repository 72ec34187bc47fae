"""REPL building blocks without a terminal: completion, lexer, history, config, toolbar, formats."""

from __future__ import annotations

import json

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from arpc.commands import COMMANDS
from arpc.completer import ArpcCompleter, arg_names_in, candidates
from arpc.config import inputrc_mode, load_config
from arpc.errors import UsageError
from arpc.format import (
    parse_duration,
    result_name,
    state_string,
    state_string_all,
    status_lines,
    time_string,
)
from arpc.history import JsonLinesHistory, append_history, read_history
from arpc.lexer import bound_lexer
from arpc.repl import level, toolbar_text
from arpc.session import Session


@pytest.fixture
def sess(x):
    s = Session(connector=x.net.connect, eager=True)
    s.load(x.addrs)
    s.open()
    yield s
    s.close()


def items(sess, text):
    return candidates(sess, text).items


def complete(sess, text):
    comp = ArpcCompleter(sess)
    return [c.text for c in comp.get_completions(Document(text, len(text)), CompleteEvent(completion_requested=True))]


# ------------------------------------------------------------------------------------------------ completion


def test_complete_commands(sess):
    assert items(sess, "") == list(COMMANDS)
    assert complete(sess, "wh") == ["when", "when-not", "when-time", "when-args"]
    assert complete(sess, "GR") == ["group-add", "group-remove"]  # case-insensitive
    assert complete(sess, "zz") == []


def test_complete_machines(sess):
    assert complete(sess, "add ") == [".", "worker0", "worker1", "worker2"]
    assert complete(sess, "mach w") == ["worker0", "worker1", "worker2"]
    assert complete(sess, "inspect worker1") == ["worker1"]


def test_complete_states_after_add_and_remove(sess, x):  # 42
    x.machs["worker0"].add("Foo")
    assert complete(sess, "add worker0 ") == ["Exception", "ErrOnClient", "Bar", "Baz", "Start", "Ready"]
    assert complete(sess, "remove worker0 ") == ["Foo"]
    assert complete(sess, "add worker0 Bar ") == ["Exception", "ErrOnClient", "Baz", "Start", "Ready", "--arg"]
    assert complete(sess, "add worker0 Bar --arg x ") == ["--val"]
    assert complete(sess, "add worker0 Bar --arg x --val y ") == ["--arg"]
    assert complete(sess, "add . St") == ["Start"]
    assert complete(sess, "when worker0 ") == ["Exception", "ErrOnClient", "Bar", "Baz", "Start", "Ready"]
    assert complete(sess, "when-not worker0 ") == ["Foo"]
    assert complete(sess, "time worker0 F") == ["Foo"]
    assert complete(sess, "add nope ") == []


def test_complete_flags_and_values(sess, x):
    x.machs["worker1"].add("Start")
    flags = complete(sess, "list --")
    assert "--active" in flags and "--states-all" in flags and "--limit" in flags
    assert complete(sess, "when worker0 Foo --t") == ["--timeout"]
    assert complete(sess, "list -a ")[:3] == ["Exception", "ErrOnClient", "Foo"]
    assert complete(sess, "list -a Foo -a ") == ["Exception", "ErrOnClient", "Bar", "Baz", "Start", "Ready"]
    assert complete(sess, "group-add -P ") == ["daemon"]
    assert complete(sess, "group-add S") == ["Start"]
    assert complete(sess, "when-time worker1 -s ") == [
        "Exception", "ErrOnClient", "Foo", "Bar", "Baz", "Start", "Ready"]
    assert complete(sess, "help gr") == ["group-add", "group-remove"]
    assert complete(sess, "connect ") == x.addrs
    assert complete(sess, "list -Z ") == []


def test_complete_arg_names_from_lines_run_before(sess):
    assert complete(sess, "add worker0 Bar --arg ") == []  # nothing used yet: no server declares its args
    sess.remember_args(arg_names_in("add worker0 Bar --arg path --val /tmp/x --arg=mode --val fast"))
    sess.remember_args(arg_names_in("when-args . Foo --arg 'user' --val bob"))
    assert complete(sess, "add worker0 Bar --arg ") == ["user", "path", "mode"]  # the latest first
    assert complete(sess, "add worker0 Bar --arg p") == ["path"]
    assert complete(sess, "add worker0 Bar --arg path --val v --arg ") == ["user", "mode"]  # not twice
    assert complete(sess, "group-add Bar --arg M") == ["mode"]
    sess.remember_args(["path"])
    assert sess.arg_names == ["path", "user", "mode"]


def test_complete_script_paths(sess, tmp_path):
    (tmp_path / "one.arpc").write_text("")
    assert complete(sess, f"script {tmp_path}/o") == ["ne.arpc"]


# ------------------------------------------------------------------------------------------------ lexer


def test_lexer_tokens():
    lexer = bound_lexer(lambda: list(COMMANDS), lambda: ["worker0"], lambda: ["Foo"])(stripnl=False)
    toks = [(str(t), v) for t, v in lexer.get_tokens("add worker0 Foo --arg k --val 'a b' --timeout 5s . # c")
            if v.strip()]
    assert toks == [
        ("Token.Keyword", "add"), ("Token.Name.Class", "worker0"), ("Token.Name.Variable", "Foo"),
        ("Token.Name.Attribute", "--arg"), ("Token.Text", "k"), ("Token.Name.Attribute", "--val"),
        ("Token.Literal.String.Single", "'a b'"), ("Token.Name.Attribute", "--timeout"),
        ("Token.Literal.Number", "5s"), ("Token.Name.Builtin", "."), ("Token.Comment.Single", "# c")]
    first = next(iter(lexer.get_tokens("nope x")))
    assert str(first[0]) == "Token.Error"


# ------------------------------------------------------------------------------------------------ history


def test_history_json_lines(tmp_path):
    path = str(tmp_path / "sub" / "hist")
    h = JsonLinesHistory(path)
    assert list(h.load_history_strings()) == []
    for line in ("add . Foo", "add . Foo", "list", "  ", "mach ."):
        h.store_string(line)
    rows = [json.loads(ln) for ln in open(path, encoding="utf-8")]
    assert [r["block"] for r in rows] == ["add . Foo", "list", "mach ."]
    assert all(set(r) == {"datetime", "block"} for r in rows)
    h2 = JsonLinesHistory(path)
    assert list(h2.load_history_strings()) == ["mach .", "list", "add . Foo"]
    h2.store_string("mach .")  # same as the last stored one
    assert read_history(path) == ["add . Foo", "list", "mach ."]


def test_history_tolerates_junk(tmp_path):
    path = tmp_path / "hist"
    path.write_text('{"datetime": "x", "block": "list"}\nplain line\n{"no": "block"}\n\n[1]\n')
    assert read_history(str(path)) == ["list", "plain line"]
    append_history(str(tmp_path / "nodir" / "x" / "h"), "ok")
    assert read_history(str(tmp_path / "nodir" / "x" / "h")) == ["ok"]


# ------------------------------------------------------------------------------------------------ config


def test_config(tmp_path):
    rc = tmp_path / "inputrc"
    rc.write_text("# x\nset editing-mode vi\n")
    assert inputrc_mode(str(rc)) == "vi"
    assert inputrc_mode(str(tmp_path / "none")) is None
    cfg = load_config({"ARPC_HISTORY": str(tmp_path / "h"), "INPUTRC": str(rc)})
    assert (cfg.history_path, cfg.editing_mode, cfg.color) == (str(tmp_path / "h"), "vi", True)
    cfg = load_config({"ARPC_EDITING_MODE": "emacs", "INPUTRC": str(rc), "NO_COLOR": "1"})
    assert cfg.editing_mode == "emacs" and cfg.color is False
    assert cfg.history_path.endswith(".arpc_history")
    assert load_config({"ARPC_EDITING_MODE": "VI", "INPUTRC": str(tmp_path / "none")}).editing_mode == "vi"


# ------------------------------------------------------------------------------------------------ toolbar


def test_toolbar_and_level(sess, x):
    assert level(sess) == "all"
    assert toolbar_text(sess).strip() == "connected 3/3 │ . = worker0 │ Tab complete · Ctrl+D exit · Ctrl+C cancel"
    x.net.conns[0].set_connected(False)
    assert level(sess) == "some"
    assert ". = worker1" in toolbar_text(sess)
    for c in x.net.conns:
        c.set_connected(False)
    assert level(sess) == "none"
    assert "connected 0/3" in toolbar_text(sess)


# ------------------------------------------------------------------------------------------------ formats


def test_formats():
    names = ["Foo", "Bar", "Baz"]
    assert state_string(names, [1, 2, 3]) == "(Foo:1 Baz:3)"
    assert state_string_all(names, [1, 2, 3]) == "(Foo:1 Baz:3) [Bar:2]"
    assert state_string_all(names, [0, 0, 0]) == "() [Foo:0 Bar:0 Baz:0]"
    assert time_string([0, 1, 0]) == "[0 1 0]"
    assert [result_name(r) for r in (0, 1, 2, 57)] == ["executed", "canceled", "queued", "queued"]
    assert status_lines(3, 0, 1, 4)[0] == "Connected:      3"
    assert status_lines(3, 0, 1, 4)[3] == "Total:          4"


def test_durations():
    assert parse_duration("500ms") == 0.5
    assert parse_duration("5s") == 5.0
    assert parse_duration("1.5s") == 1.5
    assert parse_duration("1m") == 60.0
    assert parse_duration("2") == 2.0
    assert parse_duration("1h") == 3600.0
    for bad in ("", "x", "5 sec", "-1s"):
        with pytest.raises(UsageError):
            parse_duration(bad)
