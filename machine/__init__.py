"""asyncmachine for Python: a relational, multi-state, clock-based state machine.

States may be active together and are linked by relations (require, remove, add, after); each state has a
logical clock (odd = active); mutations are queued and applied as transitions that handlers can negotiate.
"""

from .api import MachineApi
from .ctx_waiter import Ctx, Waiter
from .diagram import diagram
from .errors import HandlerTimeoutError, SchemaError, StateError
from .history import History
from .log import LogLevel
from .machine import Machine
from .mutation import Mutation, MutationType, Result
from .schema import Arg, State, StateNames, declared_args
from .tracer import Tracer
from .transition import Event, Transition

__all__ = [
    "Arg", "Ctx", "Event", "HandlerTimeoutError", "History", "LogLevel", "Machine", "MachineApi", "Mutation",
    "MutationType", "Result", "SchemaError", "State", "StateError", "StateNames", "Tracer", "Transition", "Waiter",
    "declared_args", "diagram",
]
