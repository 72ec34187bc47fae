"""``<id>.addr`` files of an endpoint: written without following links, in a directory checked for strangers."""

from __future__ import annotations

import os
import stat
import tempfile

from machine.log import LazyLogger

from ..addr import short

log = LazyLogger("transport.server")


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
    fd, tmp = tempfile.mkstemp(prefix=f".{mach_id}.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o644)  # readable by the shell of other users, as addr files always were
            f.write(short(addr) + "\n")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
