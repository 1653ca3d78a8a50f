"""The recorder: takes every event that comes in from outside on ``shiplog.builds``
into the log, so the build that starts a release is part of the audit trail."""

from consumers.recorder.core import RECORDER

__all__ = ["RECORDER"]
