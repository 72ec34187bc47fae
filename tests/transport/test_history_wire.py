"""A machine's history over the wire: records with reasons and sources, errors, info, following without a gap or
a duplicate (also across a session the daemon forgot), and bad requests."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from tr_util import RawPeer, freeze, until

from machine import Machine, State
from transport import TransportError, connect, expose
from transport import protocol as P


def test_records_reasons_and_sources_from_a_daemon(daemon: Any) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        r = c.machine("worker0")
        assert d.cmd("add worker0 Start") == "OK 0"
        r.add("Baz", args={"deny": "1"})     # BazEnter refuses
        r.add("Bar")
        recs = r.history()
        assert [x["called"] for x in recs] == [["Start"], ["Baz"], ["Bar"]]
        assert recs[0]["source"] is None and recs[1]["source"] == f"session {c.id}"
        assert recs[1]["result"] == "canceled" and recs[1]["reason"] == "BazEnter returned False"
        assert recs[1]["args"] == {"deny": "1"}
        assert recs[2]["result"] == "executed" and recs[2]["added"] == ["Bar"]
        assert [x["seq"] for x in r.history(since_seq=1)] == [2, 3]
        assert [x["seq"] for x in r.history(limit=1)] == [3]
        assert r.history.records(limit=0) == [] and r.history.last_seq == 3
        h = r.history
        h.records(limit=1)
        assert h.size == 1000 and len(h) == 3     # expose's default, learnt from the reply
        info = c.info()
        assert info["machines"] == 3 and info["sessions"] >= 1 and info["uptime"] > 0
        mi = r.info()
        assert mi["records"] == 3 and mi["history"] == 1000 and "Bar" in mi["active"] and mi["last_error"] is None


def test_errors_outlive_exception_and_info_names_the_last() -> None:
    class H:
        def CState(self, e: Any) -> None:
            raise RuntimeError("disk full")

    m = Machine({"C": State()}, id="m", handlers=H())
    with expose(m) as ep, connect(ep.address) as c:
        r = c.machine("m")
        r.add("C")
        r.remove("Exception")
        errs = r.errors()
        assert len(errs) == 1 and errs[0]["type"] == "RuntimeError" and errs[0]["handler"] == "CState"
        assert "disk full" in errs[0]["trace"]
        assert r.info()["last_error"]["message"] == "disk full"
        assert c.info()["exceptions"] == []


def test_a_machine_without_history_says_so() -> None:
    m = Machine({"A": State()}, id="m")
    with expose(m, history=0) as ep, connect(ep.address) as c:
        r = c.machine("m")
        with pytest.raises(TransportError) as ei:
            r.history()
        assert ei.value.code == "no_history" and "keeps no history" in str(ei.value)
        with pytest.raises(TransportError):
            r.on_history(lambda rec: None)
        assert r.info()["history"] == 0


def test_on_history_backlog_then_live_without_gap_or_duplicate(daemon: Any) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        r = c.machine("worker1")
        for _ in range(5):
            d.cmd("add worker1 Multi")
        got: list[int] = []
        lock = threading.Lock()

        def on(rec: dict[str, Any]) -> None:
            with lock:
                got.append(rec["seq"])

        stop = r.on_history(on, backlog=3)
        writer = threading.Thread(target=lambda: [d.cmd("add worker1 Multi") for _ in range(100)])
        writer.start()
        writer.join(60)
        assert until(lambda: len(got) >= 103, timeout=10), len(got)
        with lock:
            assert got == list(range(3, 106))
        stop()
        d.cmd("add worker1 Multi")
        time.sleep(0.2)   # nothing may arrive after stop(): a short window to let a wrong push show
        assert got[-1] == 105


def test_following_survives_a_session_the_daemon_forgot(daemon: Any) -> None:
    d = daemon("--hub")
    with connect(d.addrs[0]) as c:
        r = c.machine("worker2")
        got: list[int] = []
        r.on_history(lambda rec: got.append(rec["seq"]), backlog=0)
        d.cmd("add worker2 Multi")
        assert until(lambda: got == [1])
        freeze(d.proc.pid)
        try:
            time.sleep(4.0)  # the fault: stopped past the session timeout (3.5 s)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        d.cmd("add worker2 Multi")      # may land before or after the client subscribes again
        assert until(lambda: c.connected and len(got) >= 2, timeout=10)
        d.cmd("add worker2 Multi")
        assert until(lambda: got == [1, 2, 3], timeout=10), got


def test_bad_history_requests_get_errors_and_follows_are_bounded(monkeypatch: Any) -> None:
    monkeypatch.setattr(P, "MAX_FOLLOWS", 64)  # the bound, made small (it is 10,000)
    machs = [Machine({"A": State()}, id=f"m{i}") for i in range(66)]
    with expose(machs) as ep:
        peer = RawPeer(ep.address)
        try:
            assert peer.request("hello", 1, None, {"id": "x", "proto": 1})[0] == "ok"
            rep = peer.request("hist", 2, "m0", {"since_seq": "x"})
            assert rep[0] == "err" and rep[3]["code"] == "invalid_params"
            rep = peer.request("hist", 3, "m0", {"limit": True})
            assert rep[0] == "err"
            assert peer.request("hist", 4, "nope", {})[3]["code"] == "unknown_machine"
            assert peer.request("hist", 5, None, {})[3]["code"] == "invalid_params"
            assert peer.request("hist", 6, "m0", {"limit": 10**9})[0] == "ok"     # clamped
            for i in range(64):
                assert peer.request("hist", 10 + i, f"m{i}", {"follow": True})[0] == "ok"
            rep = peer.request("hist", 100, "m64", {"follow": True})
            assert rep[0] == "err" and rep[3]["code"] == "limit"
            assert peer.request("unfollow", 101, "m0", {})[0] == "ok"
            assert peer.request("hist", 102, "m64", {"follow": True})[0] == "ok"
            assert peer.request("info", 103, None, {})[3]["machines"] == 66
        finally:
            peer.close()
