"""The values overlay of an environment, rendered for one deployment.

Secrets are resolved through a function the caller passes (the shell builds one
over the process environment and the file system with ``secret_resolver``), so
rendering itself is pure. A rendered secret is a ``SecretStr``: it shows as
``**********`` in repr, str and ``model_dump``; only ``reveal()`` gives the values,
for the target. Events carry ``references()``, never values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from consumers.planning.pipeline import Environment, SecretRef, SecretSource
from events.errors import ShiplogError

#: ``resolve(source) -> value``; None or a raised LookupError / OSError / ValueError /
#: ShiplogError means unresolved (the exception's message is the reason).
SecretResolver = Callable[[SecretSource], str | None]


class UnresolvedSecret(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    source: SecretSource
    reason: str

    def __str__(self) -> str:
        return f"value {self.key!r}: secret {self.source} is unresolved: {self.reason}"


class RenderedValues(BaseModel):
    model_config = ConfigDict(frozen=True)

    plain: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretStr] = Field(default_factory=dict)
    #: every secret's reference, resolved or not: what events may carry
    sources: dict[str, SecretSource] = Field(default_factory=dict)
    unresolved: tuple[UnresolvedSecret, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unresolved

    def reveal(self) -> dict[str, str]:
        """Every value in clear, for the target's ``Release.config`` only: never log it."""
        return {**self.plain, **{k: v.get_secret_value() for k, v in self.secrets.items()}}

    def references(self) -> dict[str, Any]:
        """The values as configured, secrets as ``{"secret": {"env": NAME}}``: safe for events."""
        refs: dict[str, Any] = dict(self.plain)
        for key, source in self.sources.items():
            refs[key] = {"secret": source.model_dump(exclude_none=True)}
        return dict(sorted(refs.items()))


def render_values(env: Environment, resolve_secret: SecretResolver) -> RenderedValues:
    """Plain values as they are, secrets through ``resolve_secret``; every secret that
    does not resolve is reported in ``unresolved`` (rendering never stops at the first)."""
    plain: dict[str, str] = {}
    secrets: dict[str, SecretStr] = {}
    sources: dict[str, SecretSource] = {}
    unresolved: list[UnresolvedSecret] = []
    for key, value in env.values.items():
        if not isinstance(value, SecretRef):
            plain[key] = value
            continue
        source = value.secret
        sources[key] = source
        try:
            resolved = resolve_secret(source)
        except (LookupError, OSError, ValueError, ShiplogError) as exc:
            unresolved.append(UnresolvedSecret(key=key, source=source, reason=_reason(exc)))
            continue
        if resolved is None:
            unresolved.append(UnresolvedSecret(key=key, source=source, reason="not found"))
        else:
            secrets[key] = SecretStr(resolved)
    return RenderedValues(plain=plain, secrets=secrets, sources=sources, unresolved=tuple(unresolved))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc.args[0]) if len(exc.args) == 1 else str(exc) or type(exc).__name__


def secret_resolver(environ: Mapping[str, str], base_dir: Path | None = None) -> SecretResolver:
    """A resolver over ``environ`` (pass ``os.environ``) and files; relative file paths
    are read from ``base_dir`` (the config directory). An empty variable or file is
    unresolved: an empty secret is almost always a mistake."""

    def resolve(source: SecretSource) -> str | None:
        if source.env is not None:
            if source.env not in environ:
                raise LookupError(f"environment variable {source.env} is not set")
            value = environ[source.env]
            if not value:
                raise LookupError(f"environment variable {source.env} is empty")
            return value
        assert source.file is not None
        path = Path(source.file)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LookupError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise LookupError(f"{path} is not UTF-8 text") from exc
        value = text[:-1] if text.endswith("\n") else text
        value = value[:-1] if value.endswith("\r") else value
        if not value:
            raise LookupError(f"{path} is empty")
        return value

    return resolve
