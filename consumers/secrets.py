"""Secret references in a plan's values and target settings: ``{"secret": {"env":
NAME}}`` or ``{"secret": {"file": PATH}}``.

Only the references travel in events and logs; the values are resolved at the
last moment, by the process that hands them to a target, with the same resolver
planning used to check that they resolve (``consumers.planning.values``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumers.planning.pipeline import SecretSource
from consumers.planning.values import secret_resolver
from events.errors import InvalidInput


def resolve_values(values: dict[str, Any], base_dir: Path | None = None) -> dict[str, str]:
    resolve = secret_resolver(os.environ, base_dir)
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and "secret" in value:
            try:
                resolved = resolve(SecretSource.model_validate(value["secret"]))
            except LookupError as exc:
                raise InvalidInput(f"value {key!r}: {exc}") from exc
            if resolved is None:
                raise InvalidInput(f"value {key!r}: secret not found")
            out[key] = resolved
        else:
            out[key] = str(value)
    return out


def is_secret_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secret"} and isinstance(value["secret"], dict)


def resolve_settings(
    settings: Mapping[str, Any],
    base_dir: Path | None = None,
    found: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A target's settings with every secret reference in them (at any depth, e.g. a
    dbmigrate ``database_url``) replaced by its value — for the target only, never
    for an event or a log. An unresolved one raises ``InvalidInput`` naming its path.
    ``found``, if given, collects value -> reference for each one resolved."""
    resolve = secret_resolver(os.environ, base_dir)

    def walk(value: Any, path: str) -> Any:
        if is_secret_ref(value):
            try:
                resolved = resolve(SecretSource.model_validate(value["secret"]))
            except (LookupError, ValueError) as exc:
                raise InvalidInput(f"target setting {path}: {exc}") from exc
            if resolved is None:
                raise InvalidInput(f"target setting {path}: secret not found")
            if found is not None:
                found[resolved] = value
            return resolved
        if isinstance(value, Mapping):
            return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return {key: walk(value, key) for key, value in settings.items()}
