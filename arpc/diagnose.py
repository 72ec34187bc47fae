"""Why an address did not connect, in words: refused, unresolvable, no route, timed out, not our protocol (or a
CURVE handshake that failed), a key file missing. Runs only after a connection failed, so it costs nothing on the
way to a working connection."""

from __future__ import annotations

import errno
import os
import socket
import stat

PROBE_TIMEOUT = 1.0  # the TCP probe after a failed hello (the hello already waited its own timeout)


def _stripped(address: str, message: str) -> str:
    prefix = f"cannot connect to {address}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _after_accept(hello_timeout: float, curve: bool) -> str:
    if curve:
        return (f"it accepts connections but the CURVE handshake or the hello did not complete in "
                f"{hello_timeout:g}s (wrong --server-key, or this client's key is not allowed?)")
    return (f"it accepts connections but did not answer the hello in {hello_timeout:g}s (not an asyncmachine "
            f"endpoint, or a CURVE one: pass --server-key and --client-key)")


def _probe_tcp(host: str, port: int) -> str | None:
    """Why a TCP connection to host:port fails (None: it connects)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve host {host} ({e.strerror})"
    last = "no address to try"
    for family, kind, proto, _, sockaddr in infos:
        s = socket.socket(family, kind, proto)
        s.settimeout(PROBE_TIMEOUT)
        try:
            s.connect(sockaddr)
            return None
        except ConnectionRefusedError:
            last = f"connection refused (nothing listens on port {port})"
        except TimeoutError:
            last = f"timed out (no answer from {host} in {PROBE_TIMEOUT:g}s; a firewall, or a host that is down?)"
        except OSError as e:
            if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                last = f"no route to host {host}"
            else:
                last = e.strerror or str(e)
        finally:
            s.close()
    return last


def _probe_ipc(path: str) -> str | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"no such socket file: {path}"
    except OSError as e:
        return f"cannot use socket file {path}: {e.strerror or e}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"not a socket: {path}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(PROBE_TIMEOUT)
    try:
        s.connect(path)
        return None
    except ConnectionRefusedError:
        return f"connection refused (nobody listens on {path}: a stale socket file?)"
    except OSError as e:
        return e.strerror or str(e)
    finally:
        s.close()


def explain(address: str, error: BaseException, hello_timeout: float, *, curve: bool = False) -> str:
    """The reason ``address`` did not connect, given the connector's ``error``."""
    message = _stripped(address, str(error)) or type(error).__name__
    if getattr(error, "code", None) == "keys":  # a key file missing or unreadable: the message names it
        return message
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://"):].rpartition(":")
        if not port.isdigit():
            return message
        why = _probe_tcp(host, int(port))
    elif address.startswith("ipc://"):
        why = _probe_ipc(address[len("ipc://"):])
    else:
        return message
    return why if why is not None else _after_accept(hello_timeout, curve)
