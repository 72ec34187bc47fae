"""``<id>.addr`` files of an endpoint: written without following links, in a directory checked for strangers."""

from __future__ import annotations

import os
import stat
import tempfile
import threading

from machine.log import LazyLogger

from ..addr import short

log = LazyLogger("transport.server")

# (dir, line) -> (path, inode) of the last addr file written with that line: the next one with the same line is a
# hard link to it, so that a shell reading a fleet's directory reads each daemon's address once (by inode), not
# once per machine
_written: dict[tuple[str, str], tuple[str, int]] = {}
_lock = threading.Lock()


def check_id(mach_id: str) -> None:
    """A machine id that names a file in the addr dir (no path separators, not hidden); raises ValueError."""
    if not mach_id or "/" in mach_id or "\\" in mach_id or "\0" in mach_id or mach_id.startswith("."):
        raise ValueError(f"machine id {mach_id[:64]!r} cannot name an addr file (no '/', '\\\\', NUL or leading '.')")


def check_dir(directory: str | os.PathLike[str]) -> None:
    """Create the addr dir if needed; warn when someone else owns it or may write to it (they could then put
    addr files of their own there, pointing our clients elsewhere)."""
    d = os.fspath(directory)
    os.makedirs(d, exist_ok=True)
    st = os.stat(d)
    if st.st_uid != os.geteuid():
        log.warning("addr dir %s belongs to uid %d, not to us (uid %d)", d, st.st_uid, os.geteuid())
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        log.warning("addr dir %s is writable by others (mode %o): they can replace its addr files", d,
                    stat.S_IMODE(st.st_mode))


def write_addr_file(directory: str | os.PathLike[str], mach_id: str, addr: str) -> str:
    """Write ``<dir>/<id>.addr`` atomically (readers never see half a line); returns its path.

    The line goes to a temp file of a random name created with O_EXCL (never through a link planted in the dir),
    which is then renamed over the target (a link there is replaced, not followed)."""
    check_id(mach_id)
    d = os.fspath(directory)
    path = os.path.join(d, f"{mach_id}.addr")
    line = short(addr) + "\n"
    with _lock:
        like = _written.get((d, line))
    if like is not None and _link(like, d, mach_id, path, line):
        return path
    fd, tmp = tempfile.mkstemp(prefix=f".{mach_id}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)  # readable by the shell of other users, as addr files always were
            f.write(line)
            ino = os.fstat(f.fileno()).st_ino
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    with _lock:
        _written[(d, line)] = (path, ino)
    return path


def _link(like: tuple[str, int], d: str, mach_id: str, path: str, line: str) -> bool:
    """Make ``path`` another name of the addr file ``like`` (path, inode) wrote earlier with ``line``; False when
    that file is gone or is no longer that (then a new file is written)."""
    src, ino = like
    tmp = os.path.join(d, f".{mach_id}.{os.urandom(6).hex()}.tmp")
    try:
        os.link(src, tmp, follow_symlinks=False)  # a new random name: fails rather than reuse a planted one
    except OSError:
        return False
    try:
        st = os.lstat(tmp)
        # replaced since (by a link, or another file; an inode number can be reused): a regular file holding
        # this very line, or a new file is written
        if st.st_ino != ino or not stat.S_ISREG(st.st_mode) or _read(tmp) != line:
            _discard(tmp)
            return False
        os.replace(tmp, path)
        if os.path.lexists(tmp):  # path was already this file: rename(2) leaves both names
            _discard(tmp)
    except BaseException:
        _discard(tmp)
        raise
    return True


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        return os.read(fd, 4096).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass
