"""Remote machines over ZeroMQ + msgpack, with the same API as local ones.

``expose(machs)`` serves machines on one ROUTER socket; ``connect(addr)`` gives a ``Client`` whose
``machine(id)`` is a ``RemoteMachine``: a mirror with the ``machine.MachineApi`` whose reads and waits are local and
whose mutations are one round trip; what a mirror cannot do raises ``MirrorLimitError``. See docs/protocol.md
for the wire format.

The names below load their module on first use, so ``transport.addr`` (the address parser the arpc shell uses
before it connects) can be imported without pyzmq.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .aio import AsyncClient, AsyncRemoteMachine, connect_async
    from .client import Client, connect
    from .errors import MirrorLimitError, RemoteError, TransportError
    from .expose import expose, expose_env
    from .fleet_calls import TransitionRecord
    from .remote import RemoteMachine
    from .server import Endpoint

_MODULES = {"Client": "client", "connect": "client", "RemoteError": "errors", "TransportError": "errors",
            "MirrorLimitError": "errors", "TransitionRecord": "fleet_calls",
            "expose": "expose", "expose_env": "expose", "RemoteMachine": "remote", "Endpoint": "server",
            "AsyncClient": "aio", "AsyncRemoteMachine": "aio", "connect_async": "aio"}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'transport' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULES])


__all__ = ["AsyncClient", "AsyncRemoteMachine", "Client", "Endpoint", "MirrorLimitError", "RemoteError",
           "RemoteMachine", "TransitionRecord", "TransportError", "connect", "connect_async", "expose", "expose_env"]
