"""The API served by uvicorn inside a shiplog process (``shiplog dev``, ``shiplog run
api``), on a socket bound here: a port that is taken fails at once with a clear
error instead of uvicorn exiting the process, and port 0 picks a free one."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from events.errors import InvalidInput

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process runner owns SIGINT/SIGTERM
    and stops the server by setting ``should_exit``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ``InvalidInput`` naming the port if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInput(
                f"the API port {host}:{port} is taken: stop what listens there, or set "
                "SHIPLOG_API_PORT to another port (0: any free one)"
            ) from exc
        raise InvalidInput(f"cannot listen on {host}:{port} for the API: {exc}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class ApiServer:
    """An ASGI app served in the current event loop until ``stop()``."""

    def __init__(self, app: Any, sock: socket.socket):
        """``sock``: a listening socket from ``bind``."""
        self.sock = sock
        self.host, self.port = sock.getsockname()[:2]
        self.server = _Server(
            uvicorn.Config(app, lifespan="off", log_config=None, access_log=True, server_header=False)
        )
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def start(self) -> asyncio.Task[None]:
        """Serve; returns the serving task once the server accepts connections."""
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]), name="api")
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise InvalidInput("the API server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("command API listening on %s", self.url)
        return self._task

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sock.close()
