"""The rollback consumer: restores the snapshot through the target, checks what was
restored, and ends the deployment as rolled back."""

from consumers.rollback.core import ROLLBACK

__all__ = ["ROLLBACK"]
