"""Run in a child Python by ``alembic_project.render_project``: prints, as JSON, every
revision of the Alembic project whose ``alembic.ini`` is the argument, oldest first,
with the upgrade and downgrade SQL Alembic's offline mode renders for it. Imports
nothing of shiplog, so running it loads only Alembic and the project's env.py."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

_TRANSACTION = re.compile(r"^\s*(BEGIN|COMMIT)\s*;\s*$", re.IGNORECASE | re.MULTILINE)
_CONTRACT = re.compile(r"^\s*shiplog:\s*contract\s*$", re.MULTILINE | re.IGNORECASE)


def render(ini: Path) -> list[dict[str, Any]]:
    """In the child: the project's revisions with their offline SQL."""
    from alembic import command
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    buffer = io.StringIO()
    config = Config(str(ini), output_buffer=buffer)
    script = ScriptDirectory.from_config(config)
    heads = script.get_heads()
    if len(heads) > 1:
        raise SystemExit(f"the project has {len(heads)} heads ({', '.join(heads)}): merge them first")
    revisions = list(reversed(list(script.walk_revisions("base", "heads"))))

    def sql(run: Any, *args: Any) -> str:
        buffer.seek(0)
        buffer.truncate()
        run(config, *args, sql=True)
        return _TRANSACTION.sub("", buffer.getvalue()).strip() + "\n"

    out = []
    for rev in revisions:
        if isinstance(rev.down_revision, tuple):
            raise SystemExit(
                f"revision {rev.revision} merges {rev.down_revision}: a line of revisions is needed"
            )
        previous = rev.down_revision
        up = sql(command.upgrade, f"{previous}:{rev.revision}" if previous else rev.revision)
        down = sql(command.downgrade, f"{rev.revision}:{previous or 'base'}")
        out.append(
            {
                "revision": rev.revision,
                "down_revision": previous,
                "doc": rev.doc or "",
                "path": str(rev.path),
                "up_sql": up,
                "down_sql": down,
                "contract": bool(_CONTRACT.search(rev.longdoc or "")),
            }
        )
    return out


if __name__ == "__main__":
    try:
        print(json.dumps(render(Path(sys.argv[1]))))
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
