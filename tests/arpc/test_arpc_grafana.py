"""`arpc grafana`: a dashboard for the metrics expose() serves, printed or written; bad flags are usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from arpc_e2e import arpc


def test_prints_and_writes_a_dashboard(tmp_path: Path) -> None:
    r = arpc("grafana", "w1", "w2", "--title", "Fleet")
    board = json.loads(r.out)
    assert r.code == 0 and board["title"] == "Fleet"
    assert board["templating"]["list"][0]["current"]["value"] == ["w1", "w2"]
    assert any("am_transitions_total" in t["expr"] for p in board["panels"] for t in p["targets"])
    out = tmp_path / "dash.json"
    r = arpc("grafana", "-o", str(out))
    assert r.code == 0 and json.loads(out.read_text())["panels"]


def test_bad_flags_and_an_unwritable_file() -> None:
    r = arpc("grafana", "--bogus")
    assert r.code == 2 and "usage: arpc grafana" in r.err
    r = arpc("grafana", "-o")
    assert r.code == 2 and "-o needs a value" in r.err
    r = arpc("grafana", "-o", "/nonexistent-dir/x.json")
    assert r.code == 1 and "cannot write" in r.err
