"""The execution consumer: snapshot, then the strategy's steps through the target,
one active deployment per service and environment."""

from consumers.execution.core import EXECUTION

__all__ = ["EXECUTION"]
