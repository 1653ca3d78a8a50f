"""Secret references in a plan's values: ``{"secret": {"env": NAME}}`` or
``{"secret": {"file": PATH}}``.

Only the references travel in events and logs; the values are resolved at the
last moment, by the process that hands them to a target, with the same resolver
planning used to check that they resolve (``consumers.planning.values``).
"""

from __future__ import annotations

import os
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
