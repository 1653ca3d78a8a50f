"""Prometheus: PromQL over the HTTP API, and the query templates an analysis names.

Why httpx rather than prometheus-api-client (the design card's name): that client is
synchronous (requests), so every query would block the event loop that also serves
the consumers — or need a thread per query. Two endpoints are all verification
uses, ``/api/v1/query`` and ``/api/v1/query_range``; ``httpx.AsyncClient`` calls
them on the loop, shares one connection pool, and lets a whole call (retries
included) be bounded by one deadline. Queries go as a POST form: long PromQL fits,
and the query text stays out of URLs (which httpx logs).

Failures are results, not exceptions: no answer, a timeout, HTTP 5xx, a refused
query (HTTP 400 ``bad_data``, 422 ``execution``) all come back as
``QueryResult(status="error")`` with the server's message. Connection failures and
5xx are retried with a short, capped backoff, within the call's timeout.

A template is PromQL with placeholders — ``{{service}}``, ``{{environment}}``,
``{{version}}``, ``{{track}}`` (canary, baseline or stable) and ``{{window}}`` — e.g.::

    sum(rate(http_requests_total{service="{{service}}",env="{{environment}}",
        version="{{version}}",code=~"5.."}[{{window}}]))
    / sum(rate(http_requests_total{service="{{service}}",env="{{environment}}",
        version="{{version}}"}[{{window}}]))

Rendering is safe: a value is escaped for the string literal it stands in (double,
single or back quotes), quoted as a literal when the literal is a regular expression
(``=~`` / ``!~``), and refused where it cannot be represented; ``{{window}}`` must be a
PromQL duration; an unknown placeholder or a label placeholder outside quotes is
refused when the template is read. Note that a ratio whose numerator has no series
(no 5xx at all) is empty, and empty is never a pass: write ``(sum(...) or vector(0))``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from adapters.metrics import MetricsCredentials, QueryResult, Sample, Series, classify
from events.errors import InvalidInput

#: per call, every retry included, unless the config says otherwise
DEFAULT_TIMEOUT_S = 10.0
#: first pause before a retry; doubled each time up to the cap
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 1.0
#: an attempt that would start with less time than this left is not made
MIN_ATTEMPT_S = 0.05
#: answers worth another attempt: the server (or a proxy in front of it) is away or busy
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: how much of a non-JSON error answer goes into the message
ANSWER_EXCERPT = 200
USER_AGENT = "shiplog-metrics/1"

Track = Literal["canary", "baseline", "stable"]
TRACKS: tuple[Track, ...] = ("canary", "baseline", "stable")
PLACEHOLDERS = ("service", "environment", "version", "track", "window")


# --- templates ---------------------------------------------------------------------


class TemplateError(InvalidInput, ValueError):
    """A query template or a value for it that cannot be rendered safely. A ValueError
    too, so a pydantic validator that meets it reports a validation error."""


_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_BRACES = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_IDENTIFIER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$")
#: the characters RE2 gives a meaning to (Go's regexp.QuoteMeta)
_RE2_SPECIAL = re.compile(r"([\\.+*?()|\[\]{}^$])")
_QUOTES = "\"'`"


def promql_duration(window: str | timedelta | float) -> str:
    """A window as a PromQL duration: ``"5m"`` as given (checked), a timedelta or a
    number of seconds in whole seconds or milliseconds."""
    if isinstance(window, str):
        if not _DURATION.match(window):
            raise TemplateError(f"window {window!r} is not a PromQL duration such as 30s, 5m or 1h30m")
        return window
    seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
    millis = round(seconds * 1000)
    if millis <= 0:
        raise TemplateError(f"window must be positive, got {seconds:g} s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class QueryContext:
    """The values a template is rendered with. Label values must be non-empty: in
    PromQL ``label=""`` matches every series *without* the label."""

    service: str
    environment: str
    version: str
    track: Track
    window: str | timedelta | float

    def values(self) -> dict[str, str]:
        if self.track not in TRACKS:
            raise TemplateError(f"track {self.track!r} is not one of {', '.join(TRACKS)}")
        out = {
            "service": self.service,
            "environment": self.environment,
            "version": self.version,
            "track": self.track,
        }
        for name, value in out.items():
            if not isinstance(value, str) or not value:
                raise TemplateError(f"{name} must be a non-empty string, got {value!r}")
        out["window"] = promql_duration(self.window)
        return out


@dataclass(frozen=True, slots=True)
class _Slot:
    start: int
    end: int
    name: str
    #: the quote of the string literal the placeholder is in; None outside literals
    quote: str | None
    regex: bool


def _regex_literal(template: str, opening: int) -> bool:
    """Whether the string literal opening at ``opening`` is a regex matcher's value."""
    before = template[:opening].rstrip()
    return before.endswith(("=~", "!~"))


def _scan(template: str) -> list[_Slot]:
    """Every placeholder, with the string-literal context it sits in; raises on an
    unknown placeholder, a label placeholder outside quotes, an unterminated literal."""
    matches = {m.start(): m for m in _BRACES.finditer(template)}
    slots: list[_Slot] = []
    state: str | None = None  # a quote, "#" in a comment, None in code
    opening = -1
    i = 0
    while i < len(template):
        match = matches.get(i)
        if match is not None and state != "#":
            ident = _IDENTIFIER.match(match.group(1))
            name = ident.group(1) if ident else match.group(1)
            if name not in PLACEHOLDERS:
                raise TemplateError(
                    f"unknown placeholder {{{{{name[:40]}}}}} in query template; "
                    f"known: {', '.join('{{' + p + '}}' for p in PLACEHOLDERS)}"
                )
            if state is None and name != "window":
                raise TemplateError(
                    f"placeholder {{{{{name}}}}} must be inside a quoted label value, "
                    f'e.g. {name}="{{{{{name}}}}}"'
                )
            regex = state is not None and _regex_literal(template, opening)
            slots.append(_Slot(match.start(), match.end(), name, state, regex))
            i = match.end()
            continue
        char = template[i]
        if state is None:
            if char in _QUOTES:
                state, opening = char, i
            elif char == "#":
                state = "#"
        elif state == "#":
            if char == "\n":
                state = None
        elif state == "`":
            if char == "`":
                state = None
        elif char == "\\":
            i += 2
            continue
        elif char == state:
            state = None
        i += 1
    if state is not None and state != "#":
        raise TemplateError(f"unterminated {state} string in query template starting at {opening}")
    if "{{" in _BRACES.sub("", template):
        raise TemplateError("unbalanced '{{' in query template")
    return slots


def _escape(value: str, quote: str | None, regex: bool) -> str:
    if regex:
        value = _RE2_SPECIAL.sub(r"\\\1", value)
    if quote is None:
        return value
    if quote == "`":
        if "`" in value:
            raise TemplateError(f"value {value!r} cannot stand in a `raw` string: it holds a backquote")
        return value
    out = []
    for char in value:
        if char == "\\" or char == quote:
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class QueryTemplate:
    """PromQL with placeholders, checked when made (raises ``TemplateError``)."""

    text: str
    _slots: tuple[_Slot, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise TemplateError("query template is empty")
        object.__setattr__(self, "_slots", tuple(_scan(self.text)))

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(s.name for s in self._slots)

    def render(self, context: QueryContext) -> str:
        """The PromQL for these values, each escaped for where it stands."""
        values = context.values()
        parts: list[str] = []
        position = 0
        for slot in self._slots:
            parts.append(self.text[position : slot.start])
            parts.append(_escape(values[slot.name], slot.quote, slot.regex))
            position = slot.end
        parts.append(self.text[position:])
        return "".join(parts)


def check_template(text: str) -> str:
    """For a pydantic ``AfterValidator``: the template if it can be rendered."""
    QueryTemplate(text)
    return text


#: a field type for a policy model: a template string, checked on validation
PromQLTemplate = Annotated[str, AfterValidator(check_template)]


def render(template: str, context: QueryContext) -> str:
    """``template`` rendered for ``context``; raises ``TemplateError``."""
    return QueryTemplate(template).render(context)


# --- the client --------------------------------------------------------------------


class PrometheusConfig(BaseModel):
    """Where Prometheus (or anything serving its HTTP API: Thanos, Mimir) answers."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: e.g. ``http://prometheus:9090`` or ``https://mimir.example/prometheus``
    base_url: str = Field(min_length=1)
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    #: sent with every query, e.g. ``X-Scope-OrgID`` for a multi-tenant server
    headers: dict[str, str] = Field(default_factory=dict)


def _unix(at: datetime) -> float:
    if at.tzinfo is None:
        raise InvalidInput(f"a query time needs a time zone, got the naive {at.isoformat()}")
    return at.timestamp()


def _seconds(step: timedelta | float) -> float:
    return step.total_seconds() if isinstance(step, timedelta) else float(step)


def _labels(item: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (item.get("metric") or {}).items()}


def _parse(data: Any) -> tuple[tuple[Sample, ...], tuple[Series, ...]]:
    """The ``data`` of a successful answer; raises ValueError on anything unexpected."""
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        return tuple(Sample(_labels(r), float(r["value"][0]), float(r["value"][1])) for r in result), ()
    if kind == "scalar":
        return (Sample({}, float(result[0]), float(result[1])),), ()
    if kind == "matrix":
        series = tuple(
            Series(_labels(r), tuple((float(t), float(v)) for t, v in r.get("values") or ())) for r in result
        )
        return (), series
    raise ValueError(f"a {kind} result is not a number")


class PrometheusMetrics:
    """PromQL against Prometheus's HTTP API. ``http`` is a client to share (closed by
    its owner); without one, the provider opens its own and ``aclose`` closes it."""

    TYPE: ClassVar[str] = "prometheus"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        credentials: MetricsCredentials | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if timeout <= 0:
            raise InvalidInput(f"timeout must be positive, got {timeout}")
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise InvalidInput(f"base_url {base_url!r} is not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidInput(f"base_url must be an http(s) URL with a host, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        self._auth: httpx.Auth | None = None
        if credentials is not None:
            if credentials.bearer_token is not None:
                self._headers["Authorization"] = f"Bearer {credentials.bearer_token.get_secret_value()}"
            elif credentials.username is not None:
                password = credentials.password.get_secret_value() if credentials.password else ""
                self._auth = httpx.BasicAuth(credentials.username, password)
        self._owned = http is None
        # trust_env=False: an adapter never reads the environment (proxies included)
        self._http = http or httpx.AsyncClient(trust_env=False)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any] | PrometheusConfig,
        credentials: MetricsCredentials | None = None,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> PrometheusMetrics:
        try:
            settings = PrometheusConfig.model_validate(config)
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            raise InvalidInput(f"invalid prometheus settings: {fields}") from None
        return cls(
            settings.base_url,
            timeout=settings.timeout_s,
            headers=settings.headers,
            credentials=credentials,
            http=http,
        )

    async def query(self, query: str, at: datetime | None = None) -> QueryResult:
        """The query's value at ``at`` (the server's now when None), as ``samples``."""
        params = {} if at is None else {"time": _unix(at)}
        return await self._call("/api/v1/query", query, params)

    async def query_range(
        self, query: str, start: datetime, end: datetime, step: timedelta | float
    ) -> QueryResult:
        """The query every ``step`` (seconds) from ``start`` to ``end``, as ``series``."""
        params = {"start": _unix(start), "end": _unix(end), "step": _seconds(step)}
        return await self._call("/api/v1/query_range", query, params)

    async def is_online(self) -> bool:
        """Whether the server evaluates a trivial query now (as Flagger's ``IsOnline``:
        the API, not ``/-/ready``, which proxies in front of Prometheus may not serve)."""
        return (await self.query("vector(1)")).ok

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> PrometheusMetrics:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, path: str, query: str, params: Mapping[str, float]) -> QueryResult:
        """One query, retried on no answer and 5xx until it succeeds, fails for good,
        or the call's timeout would be spent."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout
        delay = BACKOFF_INITIAL_S
        attempts = 0

        def failed(error_type: str, message: str) -> QueryResult:
            elapsed = loop.time() - started
            if attempts > 1:
                message = f"{message} ({attempts} attempts in {elapsed:.2f} s)"
            return QueryResult(
                query,
                "error",
                message=message,
                error_type=error_type,
                params=params,
                attempts=attempts,
                elapsed_s=elapsed,
            )

        while True:
            attempts += 1
            remaining = deadline - loop.time()
            # the server stops evaluating when we stop waiting
            form = {
                "query": query,
                "timeout": f"{remaining:.3f}",
                **{k: f"{v:.3f}" for k, v in params.items()},
            }
            try:
                async with asyncio.timeout(remaining):
                    response = await self._http.post(
                        self.base_url + path,
                        data=form,
                        headers=self._headers,
                        auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                        timeout=remaining,
                    )
            except (TimeoutError, httpx.TimeoutException):
                return failed("timeout", f"Prometheus did not answer within {self.timeout:g} s")
            except httpx.TransportError as exc:
                error_type, message, retry = "unavailable", f"cannot reach Prometheus: {_describe(exc)}", True
            except httpx.HTTPError as exc:  # an answer httpx could not decode
                return failed("invalid_response", f"unreadable answer from Prometheus: {_describe(exc)}")
            else:
                outcome = self._read(response, query, params, attempts, loop.time() - started)
                if isinstance(outcome, QueryResult):
                    return outcome
                error_type, message, retry = outcome
            if not retry or deadline - (loop.time() + delay) < MIN_ATTEMPT_S:
                return failed(error_type, message)
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    @staticmethod
    def _read(
        response: httpx.Response, query: str, params: Mapping[str, float], attempts: int, elapsed: float
    ) -> QueryResult | tuple[str, str, bool]:
        """A result, or ``(error_type, message, retryable)`` for an error answer."""
        code = response.status_code
        retryable = code in RETRYABLE_STATUSES or code >= 500
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            kind = str(body.get("errorType") or "error")
            return (
                kind,
                f"Prometheus refused the query (HTTP {code}, {kind}): {body.get('error', '')}",
                retryable,
            )
        if code >= 400:
            excerpt = response.text[:ANSWER_EXCERPT].strip()
            return (
                ("unavailable" if retryable else "http"),
                f"Prometheus answered HTTP {code}: {excerpt}",
                retryable,
            )
        if not isinstance(body, dict) or body.get("status") != "success":
            return "invalid_response", f"Prometheus answered HTTP {code} without a success document", False
        try:
            samples, series = _parse(body.get("data"))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            return "invalid_response", f"unexpected answer from Prometheus: {exc}", False
        warnings = tuple(str(w) for w in body.get("warnings") or ())
        return classify(
            query,
            samples=samples,
            series=series,
            warnings=warnings,
            params=params,
            attempts=attempts,
            elapsed_s=elapsed,
        )


def _describe(exc: httpx.HTTPError) -> str:
    """A transport error in a few words (httpx's own text can be empty)."""
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PLACEHOLDERS",
    "TRACKS",
    "PromQLTemplate",
    "PrometheusConfig",
    "PrometheusMetrics",
    "QueryContext",
    "QueryTemplate",
    "TemplateError",
    "Track",
    "check_template",
    "promql_duration",
    "render",
]
