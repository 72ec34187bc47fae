"""Remote machines over ZeroMQ + msgpack, with the same API as local ones.

``expose(machs)`` serves machines on one ROUTER socket; ``connect(addr)`` gives a ``Client`` whose
``machine(id)`` is a ``RemoteMachine``: a mirror with the ``Machine`` API whose reads and waits are local and
whose mutations are one round trip. See docs/protocol.md for the wire format.
"""

from .client import Client, connect
from .errors import RemoteError, TransportError
from .expose import expose, expose_env
from .remote import RemoteMachine
from .server import Endpoint

__all__ = ["Client", "Endpoint", "RemoteError", "RemoteMachine", "TransportError", "connect", "expose",
           "expose_env"]
