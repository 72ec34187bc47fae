"""Exit codes and the errors commands raise (each knows its exit code and a one-line message)."""

from __future__ import annotations

OK = 0
FAILED = 1
USAGE = 2
CONNECTION = 3
CANCELED = 4
TIMEOUT = 124
INTERRUPTED = 130


class ArpcError(Exception):
    """A command failed: ``str(err)`` is the one-line message, ``code`` the exit code."""

    code = FAILED

    def __init__(self, msg: str, code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if code is not None:
            self.code = code

    @property
    def type(self) -> str:
        """The error's kind for ``--json`` (the class name)."""
        return type(self).__name__


class Failed(ArpcError):
    code = FAILED


class UsageError(ArpcError):
    code = USAGE


class UnknownMachine(ArpcError):
    code = FAILED

    def __init__(self, mach_id: str) -> None:
        super().__init__(f"unknown machine: {mach_id}")
        self.mach_id = mach_id


class UnknownState(ArpcError):
    code = FAILED

    def __init__(self, names: list[str] | tuple[str, ...], mach_id: str) -> None:
        if len(names) == 1:
            msg = f"unknown state: {names[0]} (machine {mach_id})"
        else:
            msg = f"unknown states: {' '.join(names)} (machine {mach_id})"
        super().__init__(msg)
        self.names = list(names)
        self.mach_id = mach_id


class NoMatch(ArpcError):
    code = FAILED

    def __init__(self, msg: str = "no matching machines") -> None:
        super().__init__(msg)


class NotConnected(ArpcError):
    code = CONNECTION

    def __init__(self, msg: str = "not connected") -> None:
        super().__init__(msg)


class WaitTimeout(ArpcError):
    code = TIMEOUT

    def __init__(self, msg: str = "timeout") -> None:
        super().__init__(msg)


class Interrupted(ArpcError):
    code = INTERRUPTED

    def __init__(self, msg: str = "interrupted") -> None:
        super().__init__(msg)


class ExitRepl(Exception):
    """Raised by the ``exit`` command: the REPL ends (the CLI ignores it)."""

    def __init__(self, code: int = OK) -> None:
        super().__init__(code)
        self.code = code


def is_transport_error(err: BaseException) -> bool:
    """True for ``transport.TransportError`` (checked by name: importing transport here costs start-up time)."""
    return any(c.__name__ == "TransportError" for c in type(err).__mro__)


def is_state_error(err: BaseException) -> bool:
    """True for ``machine.StateError`` (an unknown state name reported by a machine or a server)."""
    return any(c.__name__ == "StateError" for c in type(err).__mro__)
