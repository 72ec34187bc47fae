"""arpc settings: the config file's named connections, the environment, precedence and sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from arpc.settings import ConfigError, config_path, describe, effective, load_config

BUILTIN = {"addrs": (), "dir": None, "file": None, "connect_timeout": 1.0, "json": False, "server_key": None,
           "client_key": None, "log_level": 0}
GOOD = """
[defaults]
connect_timeout = 2
json = false

[connections.prod]
addresses = ["tcp://127.0.0.1:7000", "127.0.0.1:7001"]
client_key = "~/keys/c.key_secret"
json = true

[connections.local]
addr_dir = "/tmp/addrs"
"""


def _cfg(tmp_path: Path, text: str) -> str:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return str(p)


def test_config_path_follows_arpc_config_then_xdg(tmp_path: Path) -> None:
    assert config_path({"ARPC_CONFIG": "/x/c.toml", "XDG_CONFIG_HOME": "/y"}) == "/x/c.toml"
    assert config_path({"XDG_CONFIG_HOME": "/y"}) == "/y/arpc/config.toml"
    assert config_path({}).endswith("/.config/arpc/config.toml")


def test_a_missing_file_is_an_empty_config(tmp_path: Path) -> None:
    cfg = load_config(str(tmp_path / "none.toml"))
    assert cfg.connections == {} and cfg.defaults == {} and cfg.path is None


def test_named_connection_wins_over_env_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, GOOD))
    env = {"ARPC_ADDR": "127.0.0.1:9", "ARPC_CLIENT_KEY": "/env.key"}
    s = effective({}, BUILTIN, profile="prod", config=cfg, env=env)
    assert s["addrs"].value == ("tcp://127.0.0.1:7000", "127.0.0.1:7001")
    assert s["addrs"].source.startswith("@prod (")
    assert s["json"].value is True and s["json"].source.startswith("@prod")
    assert s["client_key"].value == str(Path("~/keys/c.key_secret").expanduser())
    assert s["connect_timeout"] == s["connect_timeout"].__class__(2.0, f"[defaults] ({cfg.path})")
    assert s["server_key"].value is None and s["server_key"].source == "default"


def test_flags_win_over_everything(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, GOOD))
    s = effective({"addrs": ("127.0.0.1:1",), "json": False}, BUILTIN, profile="prod", config=cfg,
                  env={"ARPC_ADDR": "127.0.0.1:9"})
    assert s["addrs"].value == ("127.0.0.1:1",) and s["addrs"].source == "flag"
    assert s["json"].value is False and s["json"].source == "flag"


def test_env_addresses_only_when_none_given(tmp_path: Path) -> None:
    s = effective({}, BUILTIN, env={"ARPC_ADDR": "127.0.0.1:1, 127.0.0.1:2 tcp://127.0.0.1:3",
                                    "ARPC_SERVER_KEY": "/s.key"})
    assert s["addrs"].value == ("127.0.0.1:1", "127.0.0.1:2", "tcp://127.0.0.1:3")
    assert s["addrs"].source == "env ARPC_ADDR"
    assert s["server_key"] == s["server_key"].__class__("/s.key", "env ARPC_SERVER_KEY")
    s = effective({}, BUILTIN, env={"AM_REPL_ADDR": "1", "AM_REPL_DIR": "/run/d"})
    assert s["addrs"].value == () and s["dir"].value == "/run/d" and s["dir"].source == "env AM_REPL_DIR"
    s = effective({"dir": "/mine"}, BUILTIN, env={"ARPC_ADDR": "127.0.0.1:1"})
    assert s["addrs"].value == () and s["dir"].value == "/mine" and s["dir"].source == "flag"
    s = effective({}, BUILTIN, env={})
    assert s["addrs"].value == () and s["addrs"].source == "default"


def test_unknown_connection_names_the_known_ones(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, GOOD))
    with pytest.raises(ConfigError, match=r"unknown connection @nope .*@local, @prod"):
        effective({}, BUILTIN, profile="nope", config=cfg, env={})


@pytest.mark.parametrize("text, message", [
    ("[defaults\n", "not valid TOML"),
    ("[other]\n", "unknown table"),
    ("[defaults]\ncolour = 1\n", "unknown option 'colour'"),
    ("[defaults]\njson = 1\n", "json must be bool"),
    ("[defaults]\nlog_level = true\n", "log_level must be int"),
    ("[connections.x]\njson = true\n", "give addresses, addr_dir or addr_file"),
    ("[connections.x]\naddresses = [1]\n", "addresses must be a string or a list of strings"),
    ("[connections.x]\naddress = \"a:1\"\nport = 2\n", "unknown key 'port'"),
    ('[connections."a b"]\naddress = "a:1"\n', "a name is letters"),
])
def test_invalid_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _cfg(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert message in str(ei.value) and path in str(ei.value)


def test_describe_prints_value_and_source(tmp_path: Path) -> None:
    cfg = load_config(_cfg(tmp_path, GOOD))
    lines = describe(effective({}, BUILTIN, profile="local", config=cfg, env={}))
    assert any(line.startswith("dir") and "/tmp/addrs" in line and "(@local (" in line for line in lines)
    assert any(line.startswith("json") and "= False" in line and "([defaults] (" in line for line in lines)
    assert any(line.startswith("server_key") and "= -" in line and "(default)" in line for line in lines)


def test_named_connection_and_arpc_config_from_the_cli(tmp_path: Path) -> None:
    from arpc_e2e import Daemon, arpc

    d = Daemon(tmp_path / "addrs", "--hub")
    try:
        cfg = _cfg(tmp_path, f'[defaults]\nconnect_timeout = 3\n\n[connections.test]\naddr_dir = "{d.dir}"\n'
                             f'json = true\n')
        r = arpc("@test", "--", "list", ARPC_CONFIG=cfg)
        assert r.code == 0, r.err
        assert [m["machine"] for m in __import__("json").loads(r.out)] == ["worker0", "worker1", "worker2"]
        r = arpc("config", "@test", ARPC_CONFIG=cfg)
        assert r.code == 0 and f"dir             = {d.dir}  (@test ({cfg}))" in r.out
        assert "connect_timeout = 3.0  ([defaults]" in r.out and "json            = True  (@test" in r.out
        r = arpc("@nope", "--", "list", ARPC_CONFIG=cfg)
        assert r.code == 2 and "unknown connection @nope" in r.err and "@test" in r.err
        bad = _cfg(tmp_path, "[defaults]\njson = 3\n")
        r = arpc("-d", str(d.dir), "--", "list", ARPC_CONFIG=bad)
        assert r.code == 2 and "json must be bool" in r.err
    finally:
        d.stop()
