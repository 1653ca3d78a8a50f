"""The dashboard: a plain subscriber of the deployment topics (``handler``) feeding
an in-memory hub (``hub``) that pushes server-sent events to browsers, and
server-rendered pages (``web``) mounted into the command API's HTTP process.
The board it shows is a pure fold (``core``)."""

from consumers.dashboard.handler import DashboardFeed
from consumers.dashboard.hub import Hub
from consumers.dashboard.web import PREFIX, mount

__all__ = ["PREFIX", "DashboardFeed", "Hub", "mount"]
