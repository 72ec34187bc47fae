"""Tracers: synchronous hooks into a machine's life. Subclass ``Tracer`` and override what you need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .machine import Machine
    from .mutation import Mutation
    from .transition import Transition


class Tracer:
    """No-op hooks, called synchronously on the thread that runs the machine's queue.

    A hook must be quick and must not block; an exception raised by a hook is logged and ignored.
    """

    def machine_init(self, mach: Machine) -> None:
        """The machine was built (tracers given to the constructor only; ``bind_tracer`` does not call it)."""

    def mutation_queued(self, mach: Machine, mutation: Mutation) -> None:
        """A mutation was appended or prepended to the queue."""

    def transition_init(self, tx: Transition) -> None:
        """A transition was resolved (target known), before any handler."""

    def transition_start(self, tx: Transition) -> None:
        """Handlers of the transition are about to run."""

    def handler_start(self, tx: Transition, binding: str, handler: str) -> None:
        """A handler found on a binding is about to be called."""

    def handler_end(self, tx: Transition, binding: str, handler: str) -> None:
        """That handler returned (or raised)."""

    def transition_finals(self, tx: Transition) -> None:
        """An accepted transition was applied; final handlers are next."""

    def transition_end(self, tx: Transition) -> None:
        """The transition ended, accepted or not."""

    def queue_end(self, mach: Machine) -> None:
        """The queue drained."""

    def schema_change(self, mach: Machine, old_schema: dict[str, Any]) -> None:
        """``set_schema`` replaced the schema."""

    def machine_dispose(self, mach_id: str) -> None:
        """The machine was disposed."""
