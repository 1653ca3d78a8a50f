"""The CLI's client of the command API (httpx), with refusals as clear errors."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx

from events.errors import AdapterUnavailable, DomainRefusal, InvalidInput, ShiplogError
from shiplog.settings import DEV_TOKEN_FILE, Settings, read_runtime

TIMEOUT_S = 30.0


def cli_token(settings: Settings) -> str | None:
    """SHIPLOG_TOKEN, else the admin token of the `shiplog dev` under SHIPLOG_HOME."""
    if settings.token is not None and settings.token.get_secret_value().strip():
        return settings.token.get_secret_value().strip()
    with contextlib.suppress(OSError):
        return (settings.home / DEV_TOKEN_FILE).read_text().strip() or None
    return None


def api_url(settings: Settings) -> str:
    """SHIPLOG_API_URL, else the running `shiplog dev`'s API, else the default port."""
    if settings.api_url:
        return settings.api_url.rstrip("/")
    runtime = read_runtime(settings.home) or {}
    if runtime.get("api"):
        return str(runtime["api"]).rstrip("/")
    return f"http://127.0.0.1:{settings.api_port}"


class NotAuthenticated(InvalidInput):
    """The API refused the credential (401)."""


class NotAllowed(DomainRefusal):
    """The API refused the principal the request (403)."""


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}]
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'body'}: {e.get('msg')}" for e in detail
        )
    return str(detail)


class ApiClient:
    def __init__(self, url: str, token: str | None, timeout: float = TIMEOUT_S):
        self.url = url.rstrip("/")
        self._token = token
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        return cls(api_url(settings), cli_token(settings))

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, json={k: v for k, v in body.items() if v is not None})

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self._token:
            raise NotAuthenticated(
                "no API token: set SHIPLOG_TOKEN (an admin creates one with `shiplog token create "
                "--user NAME --roles ROLE,...`), or start `shiplog dev`, which keeps an admin token "
                "for you under SHIPLOG_HOME"
            )
        try:
            response = httpx.request(
                method,
                self.url + path,
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=self._timeout,
                **kwargs,
            )
        except httpx.ConnectError as exc:
            raise AdapterUnavailable(
                f"cannot reach the shiplog API at {self.url} ({exc}): start `shiplog dev` or "
                "`shiplog run api`, or set SHIPLOG_API_URL"
            ) from exc
        except httpx.HTTPError as exc:
            raise AdapterUnavailable(f"the shiplog API at {self.url} did not answer: {exc}") from exc
        if response.is_success:
            return response.json()
        detail = _detail(response)
        status = response.status_code
        if status == 401:
            raise NotAuthenticated(
                f"the API refused the token ({detail}): set SHIPLOG_TOKEN to a valid one "
                "(`shiplog token create --user NAME --roles ROLE,...`)"
            )
        if status == 403:
            raise NotAllowed(f"not allowed: {detail}")
        if status in (404, 409):
            raise DomainRefusal(detail)
        if status == 422:
            raise InvalidInput(detail)
        if status == 503:
            raise AdapterUnavailable(f"the API cannot serve now: {detail}")
        raise ShiplogError(f"the API answered {status}: {detail}")
