"""Errors of the transport."""

from __future__ import annotations


class TransportError(LookupError):
    """A remote call failed: nothing answered in time, the peer is gone, the machine id is unknown, or the
    server refused the request (``code`` says why: ``timeout``, ``unknown_machine``, ``invalid_params``, ...)."""

    def __init__(self, msg: str, code: str = "transport") -> None:
        super().__init__(msg)
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RemoteError(Exception):
    """An error that crossed the wire: ``type_name`` is the original class name."""

    def __init__(self, msg: str, type_name: str = "Exception") -> None:
        super().__init__(msg)
        self.type_name = type_name


class MirrorLimitError(NotImplementedError):
    """A member of the machine API that a mirror cannot honour (it would run in the source's process, or read
    what only the source knows); the message says what to do instead."""
