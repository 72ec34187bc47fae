"""``arpc dbg`` without a screen: the model (time travel, filters, bounds, pause), the feed, the recording and
its replay (every refused file is one line and exit 2)."""

from __future__ import annotations

import json

import pytest

from arpc.cli import run
from arpc.dbg.model import Model
from arpc.dbg.record import VERSION, Recorder, ReplayError, read_replay
from arpc.dbg.sources import Feed
from arpc.errors import UsageError

NAMES = ["Start", "Ready", "Foo", "Bar", "Exception"]
SCHEMA = {"Start": {}, "Ready": {"require": ["Start"]}, "Foo": {"remove": ["Bar"]}, "Bar": {"remove": ["Foo"]},
          "Exception": {}}


def machine(mid, clock=(0, 0, 0, 0, 0), parent=None, tags=(), up=True):
    return {"k": "machine", "m": mid, "t": 1.0, "parent": parent, "tags": list(tags), "states": NAMES,
            "schema": SCHEMA, "clock": list(clock), "up": up}


def update(mid, clock, added=(), removed=(), called=None, args=None, t=2.0, h=0):
    return {"k": "update", "m": mid, "t": t, "clock": list(clock), "added": list(added), "removed": list(removed),
            "ticked": [], "mutations": [{"type": "add", "called": list(called or added), "args": args or {}}],
            "h": h}


def hist(mid, seq, tick, added=(), removed=(), result="executed", reason=None, error=None):
    return {"k": "history", "m": mid, "t": 3.0,
            "rec": {"time": 3.0 + seq, "tick": tick, "mutation": "add", "called": list(added) or ["Foo"],
                    "args": {}, "auto": False, "result": result, "added": list(added), "removed": list(removed),
                    "reason": reason, "error": error, "duration": 0.001, "source": None, "seq": seq}}


def test_updates_make_records_and_time_travel_shows_each_clock():
    m = Model()
    m.apply(machine("w0"))
    m.apply(update("w0", (1, 0, 0, 0, 0), added=["Start"]))
    m.apply(update("w0", (1, 1, 0, 0, 0), added=["Ready"]))
    m.apply(update("w0", (1, 1, 1, 0, 0), added=["Foo"]))
    assert m.selected == "w0" and m.cursor is None
    assert m.board_clock() == (1, 1, 1, 0, 0)
    m.travel(-1)  # the newest record: the board as after it (now)
    assert m.shown_record().called == ("Foo",) and m.board_clock() == (1, 1, 1, 0, 0)
    m.travel(-1)
    assert m.shown_record().called == ("Ready",) and m.board_clock() == (1, 1, 0, 0, 0)
    m.travel(-5)  # clamped at the oldest
    assert m.shown_record().called == ("Start",) and m.board_clock() == (1, 0, 0, 0, 0)
    m.travel(1)
    assert m.board_clock() == (1, 1, 0, 0, 0)
    m.travel(2)  # past the newest: live again
    assert m.cursor is None and m.board_clock() == (1, 1, 1, 0, 0)


def test_history_records_get_their_clock_from_updates_or_by_undoing_changes():
    m = Model()
    m.apply(machine("w0", clock=(1, 1, 1, 0, 0)))  # listed after Start, Ready, Foo
    for seq, (tick, added) in enumerate([(1, ["Start"]), (2, ["Ready"]), (3, ["Foo"])], 1):
        m.apply(hist("w0", seq, tick, added=added))  # the backlog: no clock of its own
    m.apply(hist("w0", 4, 3, result="canceled", reason="BarEnter returned False"))
    m.apply(hist("w0", 5, 5, added=["Bar"], removed=["Foo"]))  # live, before its update arrives
    m.apply(update("w0", (1, 1, 2, 1, 0), added=["Bar"], removed=["Foo"], h=1))  # no record of its own
    mv = m.current
    assert [r.n for r in mv.records] == [1, 2, 3, 4, 5]
    assert mv.clock_at(5) == (1, 1, 2, 1, 0)    # the update of the same sum
    assert mv.clock_at(4) == (1, 1, 1, 0, 0)    # canceled: unchanged
    assert mv.clock_at(2) == (1, 1, 0, 0, 0)    # undone from the listing's clock
    assert mv.clock_at(1) == (1, 0, 0, 0, 0)
    assert mv.records[3].summary() == "add Foo CANCELED (BarEnter returned False)"


def test_switching_the_log_between_updates_and_history_logs_each_transition_once():
    m = Model()
    m.apply(machine("w0"))
    m.apply(update("w0", (1, 0, 0, 0, 0), added=["Start"]))
    m.apply(update("w0", (1, 1, 0, 0, 0), added=["Ready"]))
    m.apply(update("w0", (1, 1, 1, 0, 0), added=["Foo"]))
    m.travel(-1)
    # the history is followed now: its backlog starts at "add Ready" (tick 2)
    m.apply(hist("w0", 2, 2, added=["Ready"]))
    m.apply(update("w0", (1, 1, 1, 0, 0), added=["Foo"], h=1))
    m.apply(hist("w0", 3, 3, added=["Foo"]))
    mv = m.current
    assert [(r.n, r.called) for r in mv.records] == [(1, ("Start",)), (2, ("Ready",)), (3, ("Foo",))]
    assert m.cursor is None and mv.clock_at(3) == (1, 1, 1, 0, 0) and mv.clock_at(2) == (1, 1, 0, 0, 0)
    # given up (another machine is on screen): updates make the records again
    m.apply({"k": "note", "m": "w0", "t": 9.0, "hist": False, "text": "not followed"})
    m.apply(update("w0", (1, 1, 2, 1, 0), added=["Bar"], removed=["Foo"]))
    assert [r.summary() for r in mv.records][-2:] == ["-- not followed", "add Bar +Bar -Foo"]


def test_error_records_and_jump_to_the_last_error():
    m = Model()
    m.apply(machine("a"))
    m.apply(machine("b"))
    err = {"type": "RuntimeError", "message": "disk full", "trace": "Traceback...\nRuntimeError: disk full",
           "handler": "BarEnter"}
    m.apply(hist("b", 1, 0, result="canceled", reason="BarEnter raised RuntimeError: disk full", error=err))
    m.apply(hist("b", 2, 1, added=["Foo"]))
    assert m.selected == "a" and m.jump_to_error()
    assert m.selected == "b" and m.shown_record().error["message"] == "disk full"
    # errors from updates: Exception's args carry them
    m.apply(update("a", (0, 0, 0, 0, 1), added=["Exception"],
                   args={"err": "ValueError: bad", "err_trace": "Traceback\nValueError: bad"}))
    m.select("a")
    assert m.jump_to_error() and m.shown_record().error == {
        "type": "ValueError", "message": "bad", "trace": "Traceback\nValueError: bad", "handler": None}
    assert m.current.errored


def test_filters_are_the_list_filters_plus_tags_and_words():
    m = Model()
    m.apply(machine("root"))
    m.apply(machine("w1", parent="root", tags=["files"], clock=(1, 0, 1, 0, 0)))
    m.apply(machine("w2", parent="root", tags=["expense"]))
    m.apply(machine("w10", parent="w1"))
    m.apply(machine("orphan", parent="gone"))
    assert [(d, mv.id) for d, mv in m.listing()] == [(0, "orphan"), (0, "root"), (1, "w1"), (2, "w10"),
                                                     (1, "w2")]
    m.set_filter("-a Foo")
    assert [mv.id for _, mv in m.listing()] == ["w1"]
    assert m.selected == "w1"  # the selection follows what is shown
    m.set_filter("--tag expense")
    assert [mv.id for _, mv in m.listing()] == ["w2"]
    m.set_filter("w1")
    assert [mv.id for _, mv in m.listing()] == ["w1", "w10"]
    m.set_filter("-P root -s 2")
    assert [mv.id for _, mv in m.listing()] == ["w2"]
    for bad in ("-r (", "-a", "--nope x", "'unclosed"):
        with pytest.raises(UsageError):
            m.set_filter(bad)
    m.set_filter("")
    assert len(m.listing()) == 5


def test_relations_both_ways():
    m = Model()
    m.apply(machine("w"))
    rel = m.current.relations_both_ways("Foo")
    assert rel["remove"] == ("Bar",) and rel["removed_by"] == ("Bar",)
    assert m.current.relations_both_ways("Start")["required_by"] == ("Ready",)


def test_bounds_records_machines_pending_and_the_feed():
    m = Model(max_records=10, max_machines=3, max_pending=5)
    for _ in range(2):  # listed again (a reconnect): counted once
        for i in range(5):
            m.apply(machine(f"m{i}"))
    assert len(m.machines) == 3 and m.refused == 2
    for i in range(25):
        m.apply(update("m0", (i, 0, 0, 0, 0), added=["Start"]))
    mv = m.machines["m0"]
    assert len(mv.records) == 10 and mv.records[0].n == 16
    m.travel(-100)
    assert m.cursor == 16  # clamped to the oldest kept
    m.live()
    m.pause()
    for i in range(8):
        m.feed(update("m0", (100 + i, 0, 0, 0, 0), added=["Start"]))
    assert len(m.pending) == 5 and m.dropped == 3 and mv.clock_now == (24, 0, 0, 0, 0)  # the screen froze
    m.resume()
    assert not m.pending and mv.clock_now == (107, 0, 0, 0, 0)
    f = Feed(maxlen=4)
    for i in range(6):
        f.put({"k": "note", "m": "m0", "text": str(i)})
    out = f.drain()
    assert out[0] == {"k": "gap", "n": 2, "t": out[0]["t"]} and [e["text"] for e in out[1:]] == ["2", "3", "4", "5"]
    assert f.drain() == []


def test_record_then_replay_gives_the_same_model(tmp_path):
    path = str(tmp_path / "rec.jsonl")
    events = [machine("w0"), update("w0", (1, 0, 0, 0, 0), added=["Start"]), hist("w0", 1, 1, added=["Start"]),
              {"k": "status", "m": "w0", "t": 4.0, "up": False}, {"k": "note", "m": "w0", "t": 5.0, "text": "x"}]
    rec = Recorder(path, ["tcp://127.0.0.1:1"])
    rec.write(events)
    rec.close()
    head = json.loads(open(path).readline())
    assert head["arpc_dbg"] == VERSION and head["sources"] == ["tcp://127.0.0.1:1"]
    assert read_replay(path) == events
    m = Model()
    for ev in read_replay(path):
        m.apply(ev)
    # the update and the history record are the same transition: logged once
    assert not m.current.connected and [r.summary() for r in m.current.records] == ["add Start +Start", "-- x"]


@pytest.mark.parametrize("content, msg", [
    ("", "empty"),
    ("hello\n", "not JSON"),
    ('{"foo": 1}\n', "no header"),
    (f'{{"arpc_dbg": {VERSION + 1}}}\n', "newer"),
    (f'{{"arpc_dbg": {VERSION}}}\n{{"k": "note", "m": "x", "t": 1', "truncated at line 2"),
    (f'{{"arpc_dbg": {VERSION}}}\n{{"k": "note"\n', "line 2 is not JSON"),
    (f'{{"arpc_dbg": {VERSION}}}\n[1, 2]\n', "line 2 is not an event"),
])
def test_bad_replay_files_are_one_line_and_exit_2(tmp_path, capsys, content, msg):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ReplayError, match=msg):
        read_replay(str(p))
    capsys.readouterr()
    assert run(["dbg", "--replay", str(p)]) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_a_replay_event_with_bad_fields_is_refused_with_its_line(tmp_path, capsys):
    p = tmp_path / "bad.jsonl"
    p.write_text(f'{{"arpc_dbg": {VERSION}}}\n' + json.dumps(machine("w")) + "\n"
                 + json.dumps({**update("w", (1,)), "clock": ["x"]}) + "\n")
    assert run(["dbg", "--replay", str(p)]) == 2
    err = capsys.readouterr().err
    assert "line 3 is not a valid event" in err and err.count("\n") == 1


def test_binary_and_missing_replay_files(tmp_path, capsys):
    p = tmp_path / "bin"
    p.write_bytes(b"\xff\xfe\x00garbage\n")
    for path in (str(p), str(tmp_path / "missing")):
        assert run(["dbg", "--replay", path]) == 2
        err = capsys.readouterr().err
        assert err.startswith("err> ") and err.count("\n") == 1


def test_usage_errors(capsys):
    assert run(["dbg"]) == 2
    assert "no address given" in capsys.readouterr().err
    assert run(["dbg", "--replay", "x", "127.0.0.1:1"]) == 2
    assert "offline" in capsys.readouterr().err
    assert run(["dbg", "--bogus"]) == 2
    assert run(["dbg", "--help"]) == 0
    assert "--replay FILE" in capsys.readouterr().out
