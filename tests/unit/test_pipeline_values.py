"""The values overlay: plain values as they are, secrets resolved through the given
function and never shown — only their references are safe to put in events."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.planning.pipeline import Environment, SecretSource
from consumers.planning.values import render_values, secret_resolver

PASSWORD = "s3cr3t-p4ssw0rd"
TOKEN = "t0k3n-from-a-file"


def env(values: dict[str, object]) -> Environment:
    return Environment.model_validate({"name": "dev", "target": {"type": "local"}, "values": values})


def test_plain_values_and_resolved_secrets(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    rendered = render_values(
        env(
            {
                "LOG_LEVEL": "debug",
                "PORT": 8080,
                "DEBUG": False,
                "DB_PASSWORD": {"secret": {"env": "DB_PASSWORD"}},
                "API_TOKEN": {"secret": {"file": "token"}},
            }
        ),
        secret_resolver({"DB_PASSWORD": PASSWORD}, base_dir=tmp_path),
    )
    assert rendered.ok
    assert rendered.reveal() == {
        "LOG_LEVEL": "debug",
        "PORT": "8080",
        "DEBUG": "false",
        "DB_PASSWORD": PASSWORD,
        "API_TOKEN": TOKEN,
    }
    assert rendered.references() == {
        "API_TOKEN": {"secret": {"file": "token"}},
        "DB_PASSWORD": {"secret": {"env": "DB_PASSWORD"}},
        "DEBUG": "false",
        "LOG_LEVEL": "debug",
        "PORT": "8080",
    }


def test_a_rendered_secret_never_shows(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    rendered = render_values(
        env({"DB_PASSWORD": {"secret": {"env": "PW"}}, "API_TOKEN": {"secret": {"file": "token"}}}),
        secret_resolver({"PW": PASSWORD}, base_dir=tmp_path),
    )
    shown = [
        repr(rendered),
        str(rendered),
        str(rendered.model_dump()),
        str(rendered.model_dump(mode="json")),
        rendered.model_dump_json(),
        str(rendered.references()),
    ]
    for text in shown:
        assert PASSWORD not in text
        assert TOKEN not in text
    assert rendered.model_dump(mode="json")["secrets"] == {
        "DB_PASSWORD": "**********",
        "API_TOKEN": "**********",
    }


def test_every_unresolved_secret_is_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    rendered = render_values(
        env(
            {
                "A": {"secret": {"env": "UNSET"}},
                "B": {"secret": {"env": "EMPTY"}},
                "C": {"secret": {"file": "missing"}},
                "D": {"secret": {"file": "empty"}},
                "E": {"secret": {"env": "SET"}},
                "F": "plain",
            }
        ),
        secret_resolver({"EMPTY": "", "SET": "ok"}, base_dir=tmp_path),
    )
    assert not rendered.ok
    reasons = {u.key: (str(u.source), u.reason) for u in rendered.unresolved}
    assert reasons == {
        "A": ("env:UNSET", "environment variable UNSET is not set"),
        "B": ("env:EMPTY", "environment variable EMPTY is empty"),
        "C": ("file:missing", f"cannot read {tmp_path / 'missing'}: No such file or directory"),
        "D": ("file:empty", f"{tmp_path / 'empty'} is empty"),
    }
    assert rendered.reveal() == {"E": "ok", "F": "plain"}
    assert set(rendered.references()) == {"A", "B", "C", "D", "E", "F"}
    assert "value 'A': secret env:UNSET is unresolved" in str(rendered.unresolved[0])


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (None, "not found"),
        (KeyError("vault says no"), "vault says no"),
        (OSError(13, "Permission denied"), "Permission denied"),
    ],
)
def test_a_resolver_may_return_none_or_raise(outcome: object, reason: str) -> None:
    def resolve(source: SecretSource) -> str | None:
        if isinstance(outcome, BaseException):
            raise outcome
        return None

    rendered = render_values(env({"X": {"secret": {"env": "X"}}}), resolve)
    assert [(u.key, u.reason) for u in rendered.unresolved] == [("X", reason)]


def test_absolute_secret_files_ignore_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\r\n")
    resolve = secret_resolver({}, base_dir=Path("/nonexistent"))
    assert resolve(SecretSource(file=str(tmp_path / "token"))) == TOKEN


def test_target_settings_resolve_secret_references_at_any_depth_and_name_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from consumers.secrets import resolve_settings
    from events.errors import InvalidInput

    monkeypatch.setenv("SHOP_DB_URL", "postgresql://app:s3cret@db/shop")
    (tmp_path / "token").write_text("abc\n")
    settings = {
        "database_url": {"secret": {"env": "SHOP_DB_URL"}},
        "headers": {"auth": {"secret": {"file": "token"}}},
        "hosts": [{"name": "h1", "key": {"secret": {"file": "token"}}}],
        "migrations": "migrations/",
    }
    assert resolve_settings(settings, tmp_path) == {
        "database_url": "postgresql://app:s3cret@db/shop",
        "headers": {"auth": "abc"},
        "hosts": [{"name": "h1", "key": "abc"}],
        "migrations": "migrations/",
    }
    monkeypatch.delenv("SHOP_DB_URL")
    with pytest.raises(InvalidInput, match="target setting database_url: environment variable SHOP_DB_URL"):
        resolve_settings(settings, tmp_path)
