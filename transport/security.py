"""CURVE encryption and authentication (CurveZMQ with a ZAP authenticator), and key files.

Key files are ZeroMQ certificates: ``<name>.key`` (public) and ``<name>.key_secret`` (public + secret, readable by
its owner only), as written by ``keygen`` (``arpc keygen DIR``).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from .errors import TransportError


def keygen(directory: str | os.PathLike[str], name: str = "arpc") -> tuple[Path, Path]:
    """Write a key pair into ``directory``; returns (public key file, secret key file).

    The secret file is 0600 from its first byte (written to a private temp file, then renamed into place). An
    existing key file that is a symlink, not a regular file, or owned by another user is refused
    (``PermissionError``), and left as it was.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public_key, secret_key = zmq.curve_keypair()
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for path in (public, secret):
        _check_replaceable(path)
    curve = f'curve\n    public-key = "{public_key.decode()}"\n'
    _write_key(secret, f"{_BANNER % 'Secret'}metadata\n{curve}    secret-key = \"{secret_key.decode()}\"\n", 0o600)
    _write_key(public, f"{_BANNER % 'Public'}metadata\n{curve}", 0o644)
    return public, secret


_BANNER = "#   ZeroMQ CURVE %s Certificate (written by keygen: `arpc keygen`)\n\n"


def _check_replaceable(path: Path) -> None:
    """Refuse to replace a key file that is a link, not a regular file, or someone else's."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise PermissionError(f"refusing to replace {path}: it is a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise PermissionError(f"refusing to replace {path}: not a regular file")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"refusing to replace {path}: owned by uid {st.st_uid}, not by this user")


def _write_key(path: Path, text: str, mode: int) -> None:
    """Write ``path`` whole with ``mode``: a temp file created 0600 (O_EXCL) beside it, renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            if mode != 0o600:
                os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _load(path: str | os.PathLike[str], need_secret: bool) -> tuple[bytes, bytes | None]:
    p = Path(path)
    if not p.is_file():
        raise TransportError(f"key file not found: {p}", code="keys")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (ValueError, OSError) as exc:
        raise TransportError(f"not a key file: {p} ({exc})", code="keys") from None
    if need_secret and not secret:
        raise TransportError(f"{p} holds no secret key (use the .key_secret file)", code="keys")
    return public, secret


def public_keys(directory: str | os.PathLike[str] | None) -> set[bytes]:
    """The z85 public keys of every ``*.key`` file in ``directory``."""
    if directory is None:
        return set()
    d = Path(directory)
    if not d.is_dir():
        raise TransportError(f"key directory not found: {d}", code="keys")
    keys = set()
    for f in sorted(d.glob("*.key")):
        keys.add(_load(f, need_secret=False)[0])
    return keys


def setup_server_curve(zctx: zmq.Context[Any], sock: zmq.Socket[Any], secret_file: str | os.PathLike[str],
                       allow: str | os.PathLike[str] | None,
                       readonly: str | os.PathLike[str] | None) -> tuple[ThreadAuthenticator, set[bytes]]:
    """Make ``sock`` a CURVE server admitting only the keys in ``allow`` (and ``readonly``).

    Returns the running authenticator and the read-only keys.
    """
    public, secret = _load(secret_file, need_secret=True)
    allowed = public_keys(allow)
    ro = public_keys(readonly)
    if not allowed and not ro:
        raise TransportError("CURVE needs client keys: pass allow=DIR with the clients' *.key files", code="keys")
    known = allowed | ro
    auth = ThreadAuthenticator(zctx)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_Provider(known))
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return auth, ro - allowed


class _Provider:
    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def setup_client_curve(sock: zmq.Socket[Any], server_key: Any, client_keys: Any) -> None:
    """Make ``sock`` a CURVE client of the server whose public key file is ``server_key``."""
    if server_key is None or client_keys is None:
        raise TransportError("CURVE needs both server_key (public key file) and client_keys (secret key file)",
                             code="keys")
    server_public, _ = _load(server_key, need_secret=False)
    public, secret = _load(client_keys, need_secret=True)
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret
