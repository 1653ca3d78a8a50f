"""The approval consumer: evaluates an environment's gate — automatic criteria over
the build, or people — and fails closed."""

from consumers.approval.core import APPROVAL

__all__ = ["APPROVAL"]
