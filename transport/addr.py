"""Addresses: parsing, the loopback check, and ``<id>.addr`` files."""

from __future__ import annotations

import os

_SCHEMES = ("tcp://", "ipc://", "inproc://")


def normalize(addr: str) -> str:
    """``host:port`` -> ``tcp://host:port``; ``tcp://``, ``ipc://`` and ``inproc://`` pass; port 0 -> ``*``.

    Raises ValueError for anything else.
    """
    if not isinstance(addr, str) or not addr.strip():
        raise ValueError(f"invalid address: {addr!r}")
    a = addr.strip()
    if a.startswith(("ipc://", "inproc://")):
        return a
    if a.startswith("tcp://"):
        a = a[len("tcp://"):]
    host, sep, port = a.rpartition(":")
    if not sep or not host or not port:
        raise ValueError(f"invalid address: {addr!r} (want host:port, tcp://, ipc:// or inproc://)")
    if port == "0":
        port = "*"
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"invalid port in address: {addr!r}")
    return f"tcp://{host}:{port}"


def is_loopback(addr: str) -> bool:
    """True for ipc/inproc and for tcp on a loopback host (127.0.0.0/8, ::1, localhost)."""
    a = normalize(addr)
    if not a.startswith("tcp://"):
        return True
    host = a[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        import ipaddress  # only expose() needs it: kept out of the shell's cold start

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or a hostname: not provably loopback


def short(addr: str) -> str:
    """The form written to addr files: ``host:port`` for tcp, the full URI otherwise."""
    return addr[len("tcp://"):] if addr.startswith("tcp://") else addr


def write_addr_file(directory: str | os.PathLike[str], mach_id: str, addr: str) -> str:
    """Write ``<dir>/<id>.addr`` atomically (readers never see half a line); returns its path."""
    d = os.fspath(directory)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{mach_id}.addr")
    tmp = os.path.join(d, f".{mach_id}.addr.tmp")
    with open(tmp, "w") as f:
        f.write(short(addr) + "\n")
    os.replace(tmp, path)
    return path


def read_addr_file(path: str | os.PathLike[str]) -> str:
    """The address in an addr file (whitespace ignored). Raises ValueError when it holds none."""
    with open(path) as f:
        text = f.read().strip()
    if not text:
        raise ValueError(f"empty address file: {os.fspath(path)}")
    return normalize(text.split()[0])
