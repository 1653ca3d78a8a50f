"""The timers consumer: keeps ``timer.scheduled`` in PostgreSQL and fires
``timer.fired`` when due — at start too, for timers that fell due while it was down."""

from consumers.timers.core import TIMERS
from consumers.timers.scheduler import TimerScheduler

__all__ = ["TIMERS", "TimerScheduler"]
