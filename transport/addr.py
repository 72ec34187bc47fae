"""Addresses: the one parser (servers, clients and the arpc shell), the loopback check, and ``<id>.addr`` files."""

from __future__ import annotations

import os

RULE = "want HOST:PORT, tcp://HOST:PORT, ipc://PATH or inproc://NAME"


class AddressError(ValueError):
    """A malformed address; the message says which rule it breaks."""


def _shown(addr: str, limit: int = 80) -> str:
    text = addr if len(addr) <= limit else f"{addr[:limit]}... ({len(addr)} characters)"
    return "'" + text.encode("utf-8", "backslashreplace").decode("utf-8") + "'"  # argv bytes that were not UTF-8


def parse(addr: str, *, bind: bool = False, schemes: tuple[str, ...] = ()) -> str:
    """The canonical form of ``addr``: ``host:port`` -> ``tcp://host:port``; ``tcp://``, ``ipc://`` and
    ``inproc://`` URIs as they are.

    The port is 1-65535; ``bind=True`` also takes ``*`` or ``0`` (any free port, written ``*``). ``schemes`` names
    more URI schemes to pass as they are (e.g. arpc's in-process ``local``). Leading and trailing whitespace is
    ignored. Raises :class:`AddressError` naming the rule broken.
    """
    if not isinstance(addr, str):
        raise AddressError(f"invalid address: {addr!r}: not a string")
    a = addr.strip()
    if not a:
        raise AddressError(f"invalid address: empty ({RULE})")
    if any(c.isspace() for c in a):
        raise AddressError(f"invalid address: {_shown(a)}: contains whitespace")
    scheme, sep, rest = a.partition("://")
    if sep:
        if scheme in ("ipc", "inproc", *schemes):
            if not rest:
                raise AddressError(f"invalid address: {_shown(a)}: nothing after {scheme}:// ({RULE})")
            return a
        if scheme != "tcp":
            raise AddressError(f"invalid address: {_shown(a)}: unsupported scheme {scheme!r} ({RULE})")
        a = rest
    host, colon, port = a.rpartition(":")
    if not colon:
        raise AddressError(f"invalid address: {_shown(addr.strip())}: no port ({RULE})")
    if not host:
        raise AddressError(f"invalid address: {_shown(addr.strip())}: no host ({RULE})")
    if bind and port in ("*", "0"):
        return f"tcp://{host}:*"
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        why = "a port from 1 to 65535" + (", or * for any free port" if bind else "")
        raise AddressError(f"invalid address: {_shown(addr.strip())}: port {_shown(port)} is not {why}")
    return f"tcp://{host}:{port}"


def normalize(addr: str) -> str:
    """:func:`parse` for binding and connecting: a ``*`` or ``0`` port is taken (servers bind any free port)."""
    return parse(addr, bind=True)


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


def read_addr_file(path: str | os.PathLike[str], *, schemes: tuple[str, ...] = ()) -> str:
    """The address in an addr file (its first line, whitespace around it ignored).

    Raises OSError when it cannot be read, :class:`AddressError` (a ValueError) when it holds no valid address.
    """
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        text = f.read().strip()
    if not text:
        raise AddressError(f"empty address file: {os.fspath(path)}")
    try:
        return parse(text.splitlines()[0], schemes=schemes)
    except AddressError as e:
        raise AddressError(f"{os.fspath(path)}: {e}") from None
