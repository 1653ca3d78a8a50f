"""An aiohttp application served from its own event loop in a thread, so one server
(a fake cloud API, the Kubernetes fake) serves every test of a module whatever
loop each test runs on."""

from __future__ import annotations

import asyncio
import socket
import threading

from aiohttp import web


class ThreadedApp:
    def __init__(self, app: web.Application) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner = web.AppRunner(app)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class InjectedFailures:
    """What a fake answers in place of its real answer, for the retry tests: the next
    ``n`` requests (of one method, if given) fail with a status."""

    _failures: list[int]
    _failing_method: str | None = None

    def fail(self, status: int, n: int, method: str | None = None) -> None:
        """Answer the next ``n`` requests (of ``method``, if given) with ``status``."""
        self._failures = [status] * n
        self._failing_method = method

    def heal(self) -> None:
        """Answer every request normally again."""
        self.fail(0, 0)

    def injected(self, method: str) -> int | None:
        """The status to fail this request with, if one is due."""
        failures = getattr(self, "_failures", [])
        if failures and self._failing_method in (None, method):
            return failures.pop(0)
        return None
