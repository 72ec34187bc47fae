"""Cold start of the one-shot CLI: no REPL libraries, no transport (beyond its address parser) for commands that
need no connection, and (opt-in, ``ARPC_BENCH=1``) the time budget: median of ``arpc ADDR -- add . Foo`` at most
90 ms above (issues 15 and 18) ``python -c pass``."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import pytest
from arpc_e2e import HERE, ROOT, Daemon, env, transport_works

PROBE = """
import sys
sys.path.insert(0, {here!r})
from arpc_fixture import make_x
from arpc.cli import run
net, machs, addrs = make_x()
code = run([*addrs, "--", *{argv!r}], connector=net.connect)
# transport.addr (the address parser, stdlib only) is allowed: "transport" here means its sockets and protocol
loaded = {{m.split(".")[0] for m in sys.modules if m not in ("transport", "transport.addr")}}
heavy = sorted(loaded & {{"prompt_toolkit", "pygments", "transport", "zmq"}})
print("MODULES", " ".join(heavy), "CODE", code)
"""


def probe(*argv: str) -> tuple[list[str], int]:
    p = subprocess.run([sys.executable, "-c", PROBE.format(here=str(HERE), argv=list(argv))], capture_output=True,
                       text=True, env=env(), cwd=str(ROOT), timeout=30)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("MODULES"))
    words = line.split()
    i = words.index("CODE")
    return words[1:i], int(words[i + 1])


def test_one_shot_does_not_import_repl_libraries():
    mods, code = probe("add", ".", "Foo")
    assert code == 0
    assert "prompt_toolkit" not in mods and "pygments" not in mods


def test_help_needs_no_transport():
    mods, code = probe("help")
    assert code == 0
    assert mods == []


@pytest.mark.skipif(os.environ.get("ARPC_BENCH") != "1" or not transport_works(),
                    reason="timing budget: set ARPC_BENCH=1 (needs a quiet machine)")
def test_cold_start_budget(tmp_path):
    d = Daemon(tmp_path / "addrs")
    try:
        addr = d.addr("worker0")
        e = env()
        base, cli = [], []
        for _ in range(15):
            for out, cmd in ((base, [sys.executable, "-c", "pass"]),
                             (cli, [sys.executable, "-m", "arpc", addr, "--", "toggle", ".", "Foo"])):
                t0 = time.perf_counter()
                r = subprocess.run(cmd, capture_output=True, env=e, cwd=str(ROOT))
                out.append(time.perf_counter() - t0)
                assert r.returncode == 0
        delta = (statistics.median(cli) - statistics.median(base)) * 1000
        print(f"cold start: python -c pass {statistics.median(base) * 1000:.1f} ms, "
              f"arpc {statistics.median(cli) * 1000:.1f} ms, delta {delta:.1f} ms")
        assert delta <= 90
    finally:
        d.stop()


@pytest.mark.skipif(not transport_works(), reason="transport (pyzmq) not available")
def test_a_one_shot_mutation_over_the_wire_does_not_import_asyncio(tmp_path):
    # asyncio costs about 25 ms of a cold start: only the asyncio client and aio paths may import it
    d = Daemon(tmp_path / "addrs")
    try:
        code = ("import sys\nfrom arpc.cli import run\n"
                f"code = run([{d.addr('worker0')!r}, '--', 'add', '.', 'Foo'])\n"
                "print('ASYNCIO', 'asyncio' in sys.modules, 'CODE', code)")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=str(ROOT),
                           timeout=30)
        assert "ASYNCIO False CODE 0" in p.stdout, (p.stdout, p.stderr)
    finally:
        d.kill()
