"""``expose`` and ``expose_env``: serve machines with one call."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from machine import Machine

from .server import Endpoint

if TYPE_CHECKING:
    from .remote import RemoteMachine


def expose(
    machs: Machine | RemoteMachine | Iterable[Machine | RemoteMachine],
    *,
    addr: str = "tcp://127.0.0.1:*",
    addr_dir: str | os.PathLike[str] | None = None,
    curve: str | os.PathLike[str] | None = None,
    allow: str | os.PathLike[str] | None = None,
    readonly: str | os.PathLike[str] | None = None,
    insecure: bool = False,
    history: int = 1000,
    metrics: str | None = None,
) -> Endpoint:
    """Serve one or many machines on one socket; returns the running ``Endpoint``.

    ``addr`` is ``host:port``, ``tcp://``, ``ipc://`` or ``inproc://``; port 0 or ``*`` picks a free port
    (``endpoint.address`` tells which). With ``addr_dir`` each machine gets ``<addr_dir>/<id>.addr``. A
    non-loopback address needs CURVE keys (``curve`` = the server's secret key file, ``allow`` = a directory of
    client public keys; ``readonly`` = a directory of keys whose clients may not mutate) unless
    ``insecure=True``. ``history`` transitions of each machine are kept for clients to read (``hist``; a machine
    that keeps its own history keeps its size; 0 = none). Raises TransportError when the address can't be bound
    or is refused. ``metrics="127.0.0.1:9464"`` (or env ``AM_METRICS_ADDR``) serves Prometheus metrics of the
    endpoint and its machines at ``http://ADDR/metrics`` (extra ``metrics``); ``endpoint.metrics.address``.
    """
    from .remote import RemoteMachine

    items = [machs] if isinstance(machs, (Machine, RemoteMachine)) else list(machs)
    ep = Endpoint(items, addr=addr, addr_dir=addr_dir, curve=curve, allow=allow, readonly=readonly,
                  insecure=insecure, history=history)
    maddr = metrics if metrics is not None else os.environ.get("AM_METRICS_ADDR", "").strip() or None
    if maddr:
        from .metrics import serve_endpoint_metrics

        try:
            ep.metrics = serve_endpoint_metrics(ep, maddr)
        except BaseException:
            ep.stop()  # a metrics address that can't be served fails the whole expose(), leaving nothing bound
            raise
    return ep


def expose_env(mach: Machine) -> Endpoint | None:
    """Expose ``mach`` as the environment says: ``AM_REPL_ADDR`` (``1`` = a free loopback port) and
    ``AM_REPL_DIR`` (where to write the addr file). Returns None when ``AM_REPL_ADDR`` is unset or empty."""
    addr = os.environ.get("AM_REPL_ADDR", "").strip()
    if not addr:
        return None
    if addr == "1":
        addr = "tcp://127.0.0.1:*"
    return expose(mach, addr=addr, addr_dir=os.environ.get("AM_REPL_DIR") or None)
