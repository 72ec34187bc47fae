"""A fleet behind one addr dir (issue 18, P9): each daemon's addr files are one file under many names, read once;
``watch`` and ``group-*`` work on every daemon at once."""

from __future__ import annotations

import os
import time

import pytest
from arpc_e2e import Daemon, arpc_bg, transport_works, until

pytestmark = pytest.mark.skipif(not transport_works(), reason="transport not available")


def test_addr_files_of_an_endpoint_are_one_file_read_once(tmp_path):
    from arpc.addrs import read_addr_dir
    from machine import Machine, State
    from transport import expose

    machs = [Machine({"A": State()}, id=f"m{i}") for i in range(4)]
    with expose(machs[:3], addr_dir=tmp_path) as ep:
        inodes = {os.lstat(tmp_path / f"m{i}.addr").st_ino for i in range(3)}
        assert len(inodes) == 1  # hard links of one file (three files before)
        assert read_addr_dir(str(tmp_path)) == {str(tmp_path / f"m{i}.addr"): ep.address for i in range(3)}
        # a stranger replaces the first file by a link elsewhere: the next file is not made a name of that link
        (tmp_path / "elsewhere").write_text("tcp://10.0.0.1:1\n")
        os.unlink(tmp_path / "m0.addr")
        os.symlink(tmp_path / "elsewhere", tmp_path / "m0.addr")
        ep.add(machs[3])  # m0 is what the next one would be a name of
        assert os.path.isfile(tmp_path / "m3.addr") and not os.path.islink(tmp_path / "m3.addr")
        assert os.lstat(tmp_path / "m3.addr").st_ino not in inodes
        assert read_addr_dir(str(tmp_path))[str(tmp_path / "m3.addr")] == ep.address
        from transport.server.addrfiles import write_addr_file

        write_addr_file(tmp_path, "m3", ep.address)  # again: the same file under the same name
        write_addr_file(tmp_path, "m4", ep.address)
        assert os.lstat(tmp_path / "m4.addr").st_ino == os.lstat(tmp_path / "m3.addr").st_ino
        with open(tmp_path / "m3.addr", "w") as f:  # edited in place (same inode, as after an inode's reuse)
            f.write("tcp://10.0.0.2:2\n")
        write_addr_file(tmp_path, "m5", ep.address)
        assert read_addr_dir(str(tmp_path))[str(tmp_path / "m5.addr")] == ep.address
        assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_watch_of_machines_behind_several_daemons_subscribes_them_at_once(tmp_path):
    d = Daemon(tmp_path / "x")  # three machines, each on its own endpoint: three links
    try:
        w = arpc_bg("-d", str(d.dir), "--", "watch", "-n", "3", "--duration", "20s")
        try:
            until(lambda: all(int(d.cmd(f"sessions worker{i}")) >= 1 for i in range(3)), timeout=15,
                  what="the watch connected to every daemon")
            seen: set[str] = set()
            deadline = time.monotonic() + 15
            while w.poll() is None and time.monotonic() < deadline:
                for i in range(3):
                    d.cmd(f"add worker{i} Foo")
                    d.cmd(f"remove worker{i} Foo")
                time.sleep(0.05)  # paced: the watch stops after 3 lines
            out, err = w.communicate(timeout=10)
        finally:
            w.kill()
            w.wait(10)
        assert w.returncode == 0, err
        seen = {ln.split()[1] for ln in out.splitlines()}
        assert seen <= {"worker0", "worker1", "worker2"} and len(out.splitlines()) == 3
    finally:
        d.stop()


@pytest.mark.parametrize("older", [False, True], ids=["one-watch-a-daemon", "older-daemon-mirrors"])
def test_watch_and_group_print_the_same_with_or_without_the_fleet_requests(tmp_path, older):
    # one endpoint for the three machines: one watch subscription (or, for a daemon without it, three mirrors)
    import re

    from arpc_e2e import arpc

    d = Daemon(tmp_path / "x", "--hub", *(["--no-fleet"] if older else []))
    try:
        w = arpc_bg("-d", str(d.dir), "--", "watch", "-n", "2", "--duration", "20s", "-p", "worker")
        try:
            deadline = time.monotonic() + 15
            outs = []
            while w.poll() is None and time.monotonic() < deadline:
                outs.append(arpc("-d", str(d.dir), "--", "group-add", "Foo", "--arg", "job", "--val", "7", "-I", "1"))
                outs.append(arpc("-d", str(d.dir), "--", "group-remove", "Foo", "-I", "1"))
            out, err = w.communicate(timeout=10)
        finally:
            w.kill()
            w.wait(10)
        assert w.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2 and not err
        for ln in lines:
            assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} worker1 (\+Foo \(job=7\)|-Foo) t\d+", ln), ln
        assert [o.out for o in outs[:2]] == ["Executed: 1\nQueued: 0\nCanceled: 0\n"] * 2
        bad = arpc("-d", str(d.dir), "--", "group-add", "Baz", "--arg", "deny", "--val", "1")
        assert bad.code == 4 and bad.out == "Executed: 0\nQueued: 0\nCanceled: 3\n"
    finally:
        d.stop()


OTHER = '''
import sys
from machine import Machine, State
from transport import expose

# machines without Foo (other0, other1), and "twin", which the other daemon serves too, with a multi state: a
# second add of it would tick it again
ms = [Machine({"Other": State()}, id=f"other{i}") for i in range(2)]
twin = Machine({"Foo": State(multi=True), "Other": State()}, id="twin")
ep = expose([*ms, twin], addr="tcp://127.0.0.1:*", addr_dir=sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    words = line.split()
    if words and words[0] == "ticks":
        print(f"ok {twin.tick('Foo')}", flush=True)
    elif words and words[0] == "add":
        print(f"ok {int({m.id: m for m in [*ms, twin]}[words[1]].add(words[2]))}", flush=True)
    elif words and words[0] == "sessions":
        print(f"ok {ep.sessions}", flush=True)
ep.stop()
'''


def test_group_without_the_listing_mutates_each_file_once_and_leaves_out_what_lacks_the_states(tmp_path):
    # a -d DIR with no filter but ids: the daemons are not asked for their listings; the addr files tell the
    # machines (one address an id), each daemon checks the states; the output is that of the listing path (a
    # --limit needs the listing's order: the listing path)
    import json

    from arpc_e2e import PY, arpc

    d = tmp_path / "x"
    script = tmp_path / "other.py"
    script.write_text(OTHER)
    hub = Daemon(d, "--hub")
    others = [Daemon(d, argv=[PY, str(script), str(d)]) for _ in range(2)]
    try:
        (d / "ghost.addr").write_text(hub.addr("worker0") + "\n")  # a machine no daemon serves (any more)
        ticks = 0
        for how in ([], ["-l", "100"]):
            r = arpc("-d", str(d), "--", "group-add", "Foo", *how)
            assert (r.code, r.out, r.err) == (0, "Executed: 4\nQueued: 0\nCanceled: 0\n", ""), how
            ticks += 1  # the twin's Foo, added on one daemon only
            assert sum(int(o.cmd("ticks")) for o in others) == ticks
            r = arpc("-d", str(d), "--", "group-remove", "Foo", "-I", "w", *how)
            assert (r.code, r.out) == (0, "Executed: 4\nQueued: 0\nCanceled: 0\n"), how
            ticks += 1
            assert sum(int(o.cmd("ticks")) for o in others) == ticks
        outs = [arpc("--json", "-d", str(d), "--", "group-add", "Bar", *how) for how in ([], ["-l", "100"])]
        assert outs[0].code == outs[1].code == 0
        assert json.loads(outs[0].out) == json.loads(outs[1].out)
        assert set(json.loads(outs[0].out)["machines"]) == {"worker0", "worker1", "worker2"}
        # no machine has the state (or matches): the same error either way
        for argv in (["group-add", "Nope"], ["group-remove", "Foo", "-p", "nobody"],
                     ["group-add", "Other", "-r", "^w"]):
            a, b = arpc("-d", str(d), "--", *argv), arpc("-d", str(d), "--", *argv, "-l", "100")
            assert (a.code, a.out, a.err) == (b.code, b.out, b.err) and a.code != 0, argv
    finally:
        for o in others:
            o.stop()
        hub.stop()


def test_watch_without_the_listing_names_the_states_of_each_schema(tmp_path):
    # -d DIR and an id filter: subscribed with no listing; each daemon's state names are asked when its first
    # record comes (records meanwhile wait, in order); machines of two schemas on two daemons
    import re

    from arpc_e2e import PY

    d = tmp_path / "x"
    script = tmp_path / "other.py"
    script.write_text(OTHER)
    hub = Daemon(d, "--hub")
    other = Daemon(d, argv=[PY, str(script), str(d)])
    try:
        w = arpc_bg("-d", str(d), "--", "watch", "-n", "6", "--duration", "20s", "-r", "^(worker1|twin)$")
        try:
            deadline = time.monotonic() + 15
            while w.poll() is None and time.monotonic() < deadline:
                hub.cmd("add worker1 Foo")
                hub.cmd("add worker1 Bar")  # removes Foo
                other.cmd("add twin Foo")  # a multi state: entered again
                hub.cmd("add worker0 Foo")  # not watched
                time.sleep(0.05)  # paced: the watch stops after 6 lines
            out, err = w.communicate(timeout=10)
        finally:
            w.kill()
            w.wait(10)
        assert w.returncode == 0, err
        got = [ln.split(None, 1)[1] for ln in out.splitlines()]
        assert len(got) == 6, out
        for g in got:
            assert re.fullmatch(r"(worker1 (\+Foo( -Bar)?|\+Bar -Foo)|twin [+*]Foo) t\d+", g), got
        assert {g.split()[0] for g in got} == {"worker1", "twin"}, got
    finally:
        other.stop()
        hub.stop()
