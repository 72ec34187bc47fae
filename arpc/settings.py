"""Where arpc's settings come from: flags, named connections in a config file, the environment, defaults.

The config file is TOML (``$ARPC_CONFIG``, else ``$XDG_CONFIG_HOME/arpc/config.toml``, else
``~/.config/arpc/config.toml``)::

    [defaults]                       # options for every run (flags win)
    connect_timeout = 2.0
    json = false

    [connections.prod]               # `arpc @prod -- list`, `connect @prod`
    addresses = ["tcp://10.0.0.5:7000"]
    addr_dir = "/run/myapp"          # like -d
    server_key = "/etc/arpc/server.key"
    client_key = "~/.arpc/client.key_secret"
    json = true                      # any option of [defaults]

Precedence, highest first: a flag, the named connection (``@name``), the environment (``ARPC_ADDR`` (one or
more addresses, split on commas or spaces), ``AM_REPL_ADDR``, ``AM_REPL_DIR``, ``ARPC_SERVER_KEY``,
``ARPC_CLIENT_KEY``), ``[defaults]``, the built-in default. Addresses from the environment are used only when
no address, ``-d``, ``-f`` or ``@name`` is given. ``tomllib`` is imported only when a config file exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from .record import field
from .record import record as dataclass

#: Options a config file may set, with their type (what `[defaults]` and a connection accept).
OPTIONS: dict[str, type] = {
    "connect_timeout": float, "log_level": int, "no_color": bool, "json": bool, "req_all": bool,
    "watch": bool, "server_key": str, "client_key": str,
}
CONNECTION_KEYS = {"addresses", "address", "addr_dir", "addr_file"} | set(OPTIONS)
ENV_KEYS = {"server_key": "ARPC_SERVER_KEY", "client_key": "ARPC_CLIENT_KEY"}


class ConfigError(ValueError):
    """The config file is unreadable or invalid, or a named connection does not exist."""


@dataclass
class Setting:
    """One effective value and where it came from (``flag``, ``@prod (FILE)``, ``env ARPC_ADDR``, ...)."""

    value: Any
    source: str


@dataclass
class Connection:
    """A named connection of the config file."""

    name: str
    addresses: list[str] = field(default_factory=list)
    addr_dir: str | None = None
    addr_file: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """A parsed config file (empty when there is none)."""

    path: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    connections: dict[str, Connection] = field(default_factory=dict)


def config_path(env: Mapping[str, str] | None = None) -> str:
    """The config file's path (it may not exist)."""
    env = os.environ if env is None else env
    if env.get("ARPC_CONFIG"):
        return os.path.expanduser(env["ARPC_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "arpc", "config.toml")


def _option(where: str, key: str, value: Any) -> Any:
    want = OPTIONS[key]
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {want.__name__}, got {type(value).__name__}")
    if want is str:
        value = os.path.expanduser(str(value))
    return value


def parse_config(data: Mapping[str, Any], path: str) -> Config:
    """Check a loaded TOML document; every mistake is a ``ConfigError`` naming the file and the key."""
    cfg = Config(path)
    for top in data:
        if top not in ("defaults", "connections"):
            raise ConfigError(f"{path}: unknown table [{top}] (expected [defaults] and [connections.NAME])")
    defaults = data.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"{path}: [defaults] must be a table")
    for key, value in defaults.items():
        if key not in OPTIONS:
            raise ConfigError(f"{path}: [defaults]: unknown option {key!r} (known: {', '.join(sorted(OPTIONS))})")
        cfg.defaults[key] = _option(f"{path}: [defaults]", key, value)
    conns = data.get("connections", {})
    if not isinstance(conns, Mapping):
        raise ConfigError(f"{path}: [connections] must hold tables [connections.NAME]")
    for name, body in conns.items():
        where = f"{path}: [connections.{name}]"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ConfigError(f"{where}: a name is letters, digits, '_', '.' and '-'")
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where} must be a table")
        conn = Connection(name)
        for key, value in body.items():
            if key not in CONNECTION_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(CONNECTION_KEYS))})")
            if key in ("addresses", "address"):
                items = [value] if isinstance(value, str) else value
                if not isinstance(items, list) or not all(isinstance(a, str) and a for a in items):
                    raise ConfigError(f"{where}: {key} must be a string or a list of strings")
                conn.addresses += items
            elif key in ("addr_dir", "addr_file"):
                if not isinstance(value, str):
                    raise ConfigError(f"{where}: {key} must be a string")
                setattr(conn, key, os.path.expanduser(value))
            else:
                conn.options[key] = _option(where, key, value)
        if not (conn.addresses or conn.addr_dir or conn.addr_file):
            raise ConfigError(f"{where}: give addresses, addr_dir or addr_file")
        cfg.connections[name] = conn
    return cfg


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The config file at ``path`` (default ``config_path()``); an empty ``Config`` when it does not exist."""
    path = path or config_path(env)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return Config()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    import tomllib

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
    return parse_config(data, path)


def split_addresses(text: str) -> list[str]:
    """``ARPC_ADDR``'s value: addresses separated by commas and/or white space."""
    return [a for a in re.split(r"[,\s]+", text) if a]


def _repl_addr(env: Mapping[str, str]) -> str:
    """``AM_REPL_ADDR`` as an address; ``1`` (a daemon's "any free port") names none."""
    value = env.get("AM_REPL_ADDR", "").strip()
    return "" if value == "1" else value


def effective(given: Mapping[str, Any], builtin: Mapping[str, Any], *, profile: str | None = None,
              config: Config | None = None, env: Mapping[str, str] | None = None) -> dict[str, Setting]:
    """Every setting with its source. ``given``: the flags the user typed (name -> value; absent = not given,
    with ``addrs``, ``dir``, ``file`` for the connection); ``builtin``: the defaults of every option."""
    env = os.environ if env is None else env
    config = config or Config()
    out: dict[str, Setting] = {}
    conn: Connection | None = None
    if profile is not None:
        conn = config.connections.get(profile)
        if conn is None:
            known = ", ".join(f"@{n}" for n in sorted(config.connections)) or "none"
            where = config.path or config_path(env)
            raise ConfigError(f"unknown connection @{profile} (in {where}: {known})")
    conn_src = f"@{profile} ({config.path})" if conn else ""
    for key, default in builtin.items():
        if key in ("addrs", "dir", "file"):
            continue
        if key in given:
            out[key] = Setting(given[key], "flag")
        elif conn is not None and key in conn.options:
            out[key] = Setting(conn.options[key], conn_src)
        elif key in ENV_KEYS and env.get(ENV_KEYS[key]):
            out[key] = Setting(env[ENV_KEYS[key]], f"env {ENV_KEYS[key]}")
        elif key in config.defaults:
            out[key] = Setting(config.defaults[key], f"[defaults] ({config.path})")
        else:
            out[key] = Setting(default, "default")
    # where to connect: flags, else the named connection, else the environment
    addrs, dir_, file = tuple(given.get("addrs") or ()), given.get("dir"), given.get("file")
    if addrs or dir_ or file:
        src = "flag"
    elif conn is not None:
        addrs, dir_, file, src = tuple(conn.addresses), conn.addr_dir, conn.addr_file, conn_src
    elif env.get("ARPC_ADDR", "").strip():
        addrs, src = tuple(split_addresses(env["ARPC_ADDR"])), "env ARPC_ADDR"
    elif _repl_addr(env) or env.get("AM_REPL_DIR", "").strip():
        addrs = tuple(split_addresses(_repl_addr(env)))
        dir_ = env.get("AM_REPL_DIR") or None
        src = "env " + " + ".join(k for k, v in (("AM_REPL_ADDR", _repl_addr(env)),
                                                ("AM_REPL_DIR", env.get("AM_REPL_DIR", "").strip())) if v)
    else:
        src = "default"
    out["addrs"] = Setting(addrs, src)
    out["dir"] = Setting(dir_, src if dir_ else "default")
    out["file"] = Setting(file, src if file else "default")
    return out


def describe(settings: Mapping[str, Setting]) -> list[str]:
    """``arpc config``'s lines: ``name = value  (source)``."""
    width = max((len(k) for k in settings), default=0)
    lines = []
    for key, s in settings.items():
        value = " ".join(s.value) if isinstance(s.value, tuple) else s.value
        lines.append(f"{key:<{width}} = {value if value not in (None, '') else '-'}  ({s.source})")
    return lines


def take_profile(addrs: tuple[str, ...]) -> tuple[str | None, tuple[str, ...]]:
    """``@name`` among the addresses: (name, the other addresses). More than one is a ``ConfigError``."""
    named = [a[1:] for a in addrs if a.startswith("@")]
    if len(named) > 1:
        raise ConfigError(f"one named connection at a time (got {', '.join('@' + n for n in named)})")
    return (named[0] if named else None), tuple(a for a in addrs if not a.startswith("@"))


def apply_config(opts: Any, defaults: Any, env: Mapping[str, str] | None = None,
                 path: str | None = None) -> dict[str, Setting]:
    """Fill ``opts`` (arpc's Options) from ``@name`` among its addresses and the config file, where a flag left
    the built-in default (``defaults``: an Options with nothing given). Returns the effective settings."""
    profile, addrs = take_profile(tuple(opts.addrs))
    opts.addrs = addrs
    config = load_config(path, env) if (profile is not None or os.path.exists(path or config_path(env))) \
        else Config()
    keys = ("addrs", "dir", "file", *OPTIONS)
    given = {k: getattr(opts, k) for k in keys if getattr(opts, k) != getattr(defaults, k)}
    builtin = {k: getattr(defaults, k) for k in keys}
    out = effective(given, builtin, profile=profile, config=config, env=env)
    for k, s in out.items():
        setattr(opts, k, s.value)
    return out


def named_connection(name: str, env: Mapping[str, str] | None = None,
                     path: str | None = None) -> tuple[list[str], dict[str, Setting]]:
    """``connect @name`` in the REPL: the connection's addresses (its ``addresses``, then what its ``addr_file``
    and the ``*.addr`` files of its ``addr_dir`` hold now) and its effective settings, as ``arpc @name`` would
    have them. A missing connection or file is a ``ConfigError``."""
    from .session import read_addr_file, scan_dir

    keys = ("server_key", "client_key")
    config = load_config(path, env)
    builtin: dict[str, Any] = {"addrs": (), "dir": None, "file": None, **dict.fromkeys(keys)}
    settings = effective({}, builtin, profile=name, config=config, env=env)
    addrs = list(settings["addrs"].value)
    try:
        if settings["file"].value:
            addrs.append(read_addr_file(os.path.expanduser(settings["file"].value)))
        if settings["dir"].value:
            addrs.extend(read_addr_file(p) for p in scan_dir(os.path.expanduser(settings["dir"].value)))
    except Exception as e:  # noqa: BLE001 - an unreadable addr file or dir, in the error's own words
        raise ConfigError(f"@{name}: {getattr(e, 'msg', None) or e}") from None
    if not addrs:
        raise ConfigError(f"@{name} ({config.path}) names no address (addresses, addr_file or addr_dir)")
    return list(dict.fromkeys(addrs)), settings
