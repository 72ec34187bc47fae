"""The endpoint's set-up and tear-down: a failed expose() leaves nothing behind; addr files are written safely."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from tr_util import can_bind, free_port

from machine import Machine, State
from transport import connect, expose
from transport.addr import read_addr_file

SCHEMA = {"Foo": State()}


@pytest.mark.parametrize("case", ["same machine twice", "an id with a slash", "an id that climbs out"])
def test_a_failed_expose_leaves_no_port_bound(tmp_path: Path, case: str) -> None:
    """expose() raised after binding, and the port stayed bound until the process exited."""
    port = free_port()
    m = Machine(SCHEMA, id="a")
    machs = {"same machine twice": [m, m], "an id with a slash": [m, Machine(SCHEMA, id="b/c")],
             "an id that climbs out": [m, Machine(SCHEMA, id="../d")]}[case]
    with pytest.raises(ValueError):
        expose(machs, addr=f"127.0.0.1:{port}", addr_dir=tmp_path)
    assert can_bind(port)
    assert list(tmp_path.iterdir()) == []  # nor an addr file
    ep = expose(m, addr=f"127.0.0.1:{port}")  # nor a tracer on the machine: it serves again
    try:
        with connect(ep.address) as c:
            c.machine("a").add("Foo")
        assert m.is_active("Foo")
    finally:
        ep.stop()


def test_adding_a_machine_whose_id_names_no_file_changes_nothing(tmp_path: Path) -> None:
    ep = expose(Machine(SCHEMA, id="a"), addr_dir=tmp_path)
    try:
        with pytest.raises(ValueError):
            ep.add(Machine(SCHEMA, id="x/y"))
        assert [m.id for m in ep.machines] == ["a"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.addr"]
    finally:
        ep.stop()


def test_addr_files_never_follow_a_planted_link(tmp_path: Path) -> None:
    """A symlink planted at the temp file's name made expose() overwrite the file it pointed to."""
    d = tmp_path / "addrs"
    d.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for name in (".m.addr.tmp", "m.addr"):  # the old fixed temp name, and the target itself
        (d / name).unlink(missing_ok=True)
        (d / name).symlink_to(victim)
    ep = expose(Machine(SCHEMA, id="m"), addr_dir=d)
    try:
        assert victim.read_text() == "precious\n"
        assert not (d / "m.addr").is_symlink()
        assert read_addr_file(d / "m.addr") == ep.address
        assert [p.name for p in d.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()] == []
    finally:
        ep.stop()
    assert victim.read_text() == "precious\n"


def test_an_addr_dir_writable_by_others_is_warned_about(tmp_path: Path, caplog) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o777)
    with caplog.at_level(logging.WARNING, logger="transport.server"):
        ep = expose(Machine(SCHEMA, id="m"), addr_dir=d)
        ep.stop()
    assert any("writable by others" in r.getMessage() for r in caplog.records)
    caplog.clear()
    os.chmod(d, 0o755)
    with caplog.at_level(logging.WARNING, logger="transport.server"):
        ep = expose(Machine(SCHEMA, id="m"), addr_dir=d)
        ep.stop()
    assert not [r for r in caplog.records if "addr dir" in r.getMessage()]
