"""The client's connection as a state machine (``Client.state``), built with the core's own ``Machine``.

States, and what makes them active:

- ``Start``: the client is open (from its creation until ``close()``); every state but ``Disconnected``
  requires it.
- ``Connecting``: the first hello is on its way (only while ``connect()`` runs).
- ``Connected``: the server answered a hello; it knows our session.
- ``Ready``: connected, and every mirror's subscription was sent again (after a loss). ``on_status(fn)`` calls
  ``fn(True)`` when Ready is entered.
- ``Disconnected``: the link is down (no answer for ``PEER_TIMEOUT``, or the server lost our session), or the
  client was closed (then it is the only active state).
- ``RetryingConn``: the client says hello every heartbeat until the server answers; ``on_status(fn)`` calls
  ``fn(False)`` when it is entered (the link went down while the client is open).
- ``ErrNetwork`` (multi): the network failed: the server stayed silent past the peer timeout, or the first
  hello was not answered. Ready clears it. A server that restarted or forgot our session is not a network
  error: that link loss is Disconnected and RetryingConn without ErrNetwork.

A call that times out raises ``TransportError`` to its caller and does not change these states: a slow
handler on the server is not a lost link (the heartbeats judge the link).

The machine's handlers run on the thread that changes the state: usually the process's client I/O thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from machine import Machine, State
from machine.log import LazyLogger

if TYPE_CHECKING:
    from machine.transition import Event

    from .client import Client

log = LazyLogger("transport.client")  # logging is imported on first use

START, CONNECTING, CONNECTED, READY = "Start", "Connecting", "Connected", "Ready"
DISCONNECTED, RETRYING, ERR_NETWORK = "Disconnected", "RetryingConn", "ErrNetwork"

SCHEMA: dict[str, State] = {
    START: State(),
    CONNECTING: State(require=START),
    CONNECTED: State(require=START, remove=(CONNECTING, RETRYING, DISCONNECTED)),
    READY: State(require=CONNECTED, remove=ERR_NETWORK),
    # Ready too, not only through its requirement: Ready would otherwise block ErrNetwork in the same mutation
    DISCONNECTED: State(remove=(CONNECTING, CONNECTED, READY)),
    RETRYING: State(require=START),
    ERR_NETWORK: State(require=START, multi=True),
}


def new_state(client_id: str) -> Machine:
    """The connection machine of the client ``client_id``: Start and Connecting active."""
    m = Machine(SCHEMA, id=f"{client_id}-conn", tags=("transport-client",), handler_timeout=None)
    m.add(START, CONNECTING)
    return m


class StatusHandlers:
    """``on_status`` as handlers of the connection machine: ``fn(True)`` on Ready, ``fn(False)`` on
    RetryingConn. A callback that raises is logged; it never puts the connection machine into Exception."""

    def __init__(self, fn: Callable[[bool], Any]) -> None:
        self._fn = fn

    def _call(self, up: bool) -> None:
        try:
            self._fn(up)
        except Exception:
            log.exception("status callback failed")

    def ReadyState(self, e: Event) -> None:
        self._call(True)

    def RetryingConnState(self, e: Event) -> None:
        self._call(False)


def describe(client: Client) -> str:
    """The client's active connection states, space-separated (``"Start Connected Ready"``), for display."""
    return " ".join(client.state.active_states())
