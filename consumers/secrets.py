"""Secret references in values: ``{"secret": {"env": NAME}}`` or ``{"secret": {"file": PATH}}``.

Only the references travel in events and logs; the values are resolved at the
last moment, by the process that hands them to a target.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from events.errors import InvalidInput


def resolve_secret(ref: dict[str, Any]) -> str:
    if "env" in ref:
        value = os.environ.get(str(ref["env"]))
        if value is None:
            raise InvalidInput(f"secret environment variable {ref['env']} is not set")
        return value
    if "file" in ref:
        try:
            return Path(str(ref["file"])).read_text().rstrip("\n")
        except OSError as exc:
            raise InvalidInput(f"secret file {ref['file']} cannot be read: {exc.strerror}") from exc
    raise InvalidInput(f"a secret reference needs 'env' or 'file', got {sorted(ref)}")


def resolve_values(values: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict) and "secret" in value:
            out[key] = resolve_secret(value["secret"])
        else:
            out[key] = str(value)
    return out
