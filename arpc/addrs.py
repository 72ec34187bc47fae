"""Addresses for the shell: argv's (:func:`parse_address`) and those of addr files, one (:func:`read_addr_file`)
or a directory of them (:func:`read_addr_dir`)."""

from __future__ import annotations

import os

from transport.addr import AddressError, parse
from transport.addr import read_addr_file as _read_addr_file

from .errors import Failed, UsageError

LOCAL_SCHEMES = ("local",)  # in-process machines (arpc.local), for tests and embedding


def parse_address(addr: str) -> str:
    """An address as given on the command line or to ``connect``, in canonical form (``host:port`` ->
    ``tcp://host:port``). A malformed one is a :class:`UsageError` (exit 2) naming the rule it breaks."""
    try:
        return parse(addr, schemes=LOCAL_SCHEMES)
    except AddressError as e:
        raise UsageError(str(e)) from None


def read_addr_file(path: str) -> str:
    """The address in an addr file (its first line; whitespace around it ignored)."""
    try:
        return _read_addr_file(path, schemes=LOCAL_SCHEMES)
    except OSError as e:
        raise Failed(f"cannot read address file: {path}: {e.strerror or e}") from None
    except AddressError as e:
        raise Failed(str(e)) from None


def scan_dir(directory: str) -> list[str]:
    """Every ``*.addr`` file in ``directory``, sorted by name."""
    return sorted(_scan(directory))


def _scan(directory: str) -> dict[str, int]:
    """The ``*.addr`` files of ``directory`` and their inode numbers (read with the names: no stat calls)."""
    try:
        with os.scandir(directory) as it:
            return {e.path: e.inode() for e in it if e.name.endswith(".addr")}
    except FileNotFoundError:
        raise Failed(f"no such directory: {directory}") from None
    except NotADirectoryError:
        raise Failed(f"not a directory: {directory}") from None
    except OSError as e:
        raise Failed(f"cannot read directory: {directory}: {e.strerror or e}") from None


def read_addr_dir(directory: str, strict: bool = True) -> dict[str, str]:
    """The address of every ``*.addr`` file in ``directory``, by path. A file is read once per inode: a daemon
    writes its machines' files as hard links of one (a fleet of 50 daemons x 1000 machines is 50 reads, not
    50,000). ``strict``: the first unreadable file is a :class:`Failed`; else it is left out."""
    out: dict[str, str] = {}
    by_inode: dict[int, str] = {}
    for path, ino in _scan(directory).items():
        addr = by_inode.get(ino) if ino else None
        if addr is None:
            try:
                addr = read_addr_file(path)
            except Failed:
                if strict:
                    raise
                continue
            by_inode[ino] = addr
        out[path] = addr
    return out
