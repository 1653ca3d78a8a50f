"""The command-signing key: SHIPLOG_COMMAND_KEY, or one file under SHIPLOG_HOME that
every process sharing the home uses."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import SecretStr

from events.signature import key_id_for
from shiplog.identity import command_key, verifying_keys
from shiplog.settings import Settings


def test_without_a_configured_key_one_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with ThreadPoolExecutor(8) as pool:  # processes starting together agree on one key
        keys = set(pool.map(lambda _: command_key(settings), range(16)))
    [(key_id, key)] = keys
    path = tmp_path / "home" / "command.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip().encode() == key and len(key) == 64
    assert key_id == key_id_for(key) and verifying_keys(settings) == {key_id: key}
    assert [p.name for p in path.parent.iterdir()] == ["command.key"]  # no temporary files left


def test_a_configured_key_wins_and_no_file_is_made(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, command_key=SecretStr("a shared secret for every host"))
    key_id, key = command_key(settings)
    assert key == b"a shared secret for every host" and key_id == key_id_for(key)
    assert not (tmp_path / "command.key").exists()
    assert "a shared secret" not in repr(settings)
