"""The notification consumer: pending approvals, reminders, expiries and outcomes
go to the channels ``notifications.yaml`` routes them to (a signed webhook, Slack,
e-mail); each notification sent or finally failed is recorded in the deployment's
stream, caused by the event it is about."""

from consumers.contract import Consumer
from consumers.notification.core import (
    NAME,
    NOTIFIABLE_TYPES,
    NotificationState,
    decide,
    evolve,
    stream_for,
)
from consumers.notification.delivery import Courier, gather
from events.topics import APPROVALS, EXECUTIONS, PLANS, ROLLBACKS

NOTIFICATION: Consumer[NotificationState] = Consumer(
    name=NAME,
    topics=(PLANS.name, APPROVALS.name, EXECUTIONS.name, ROLLBACKS.name),
    stream_for=stream_for,
    initial=NotificationState,
    evolve=evolve,
    decide=decide,
    accepts=NOTIFIABLE_TYPES,
    gather=gather,
    description="tells people on their channels about approvals and outcomes, and records that it did",
)

__all__ = ["NOTIFICATION", "Courier"]
