"""A config directory: the example loads clean, and every error in a bad file is
reported with file, line and field — all of them, not just the first."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.planning.loader import (
    ConfigError,
    PipelineConfigInvalid,
    load_pipelines,
    parse_pipeline,
    validate_dir,
)
from events.errors import InvalidInput

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "pipelines"

#: line numbers below refer to this file
GOOD = """\
service: shop
environments:
  - name: dev
    target:
      type: local
    values:
      LOG_LEVEL: debug
    strategy:
      type: canary
      steps:
        - set_weight: 20
        - analysis: {}
    schedule:
      - kind: allow
        cron: "0 9 * * 1-5"
        duration: 8h
        timezone: Europe/Berlin
"""


def test_the_example_directory_validates_clean() -> None:
    assert validate_dir(EXAMPLES) == []
    pipelines = load_pipelines(EXAMPLES)
    sample = pipelines["sample"]
    assert [env.name for env in sample.environments] == ["dev", "staging", "production"]
    assert [env.strategy.type for env in sample.environments] == ["rolling", "blue_green", "canary"]
    production = sample.environment("production")
    assert {w.kind for w in production.schedule} == {"allow", "deny"}
    assert production.gate.manual is not None and production.gate.manual.required
    assert sample.environment("dev").gate.auto_approve is not None
    assert production.target.settings["command"][-1] == "{version}"


def test_a_good_file_loads(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(GOOD)
    assert validate_dir(tmp_path) == []
    assert load_pipelines(tmp_path)["shop"].environments[0].values == {"LOG_LEVEL": "debug"}


BAD = [
    # (case, replace this, with this, line, field, words in the message)
    (
        "wrong type",
        "- set_weight: 20",
        "- set_weight: lots",
        11,
        "environments.0.strategy.steps.0.set_weight",
        "valid integer",
    ),
    (
        "out of range",
        "- set_weight: 20",
        "- set_weight: 120",
        11,
        "environments.0.strategy.steps.0.set_weight",
        "less than or equal to 100",
    ),
    (
        "unknown field",
        "      type: local\n",
        "      type: local\n      setings: {}\n",
        6,
        "environments.0.target.setings",
        "unknown field 'setings'",
    ),
    (
        "missing required field, at its parent mapping",
        "      type: local\n",
        "      settings: {}\n",
        4,
        "environments.0.target.type",
        "missing required field 'type'",
    ),
    (
        "missing name of a list item, at the item",
        "  - name: dev\n    target:",
        "  - target:",
        3,
        "environments.0.name",
        "missing required field 'name'",
    ),
    (
        "missing strategy type",
        "      type: canary\n",
        "",
        8,
        "environments.0.strategy.type",
        "missing field 'type'",
    ),
    (
        "unknown strategy type",
        "type: canary",
        "type: yolo",
        9,
        "environments.0.strategy.type",
        "unknown type 'yolo'",
    ),
    (
        "bad cron",
        '"0 9 * * 1-5"',
        '"0 25 * * 1-5"',
        15,
        "environments.0.schedule.0.cron",
        "not a valid cron expression",
    ),
    (
        "cron that never fires",
        '"0 9 * * 1-5"',
        '"0 9 30 2 *"',
        15,
        "environments.0.schedule.0.cron",
        "never fires",
    ),
    (
        "bad timezone",
        "Europe/Berlin",
        "Europe/Berlinn",
        17,
        "environments.0.schedule.0.timezone",
        "not an IANA time zone",
    ),
    (
        "bad duration",
        "duration: 8h",
        "duration: 8 hours",
        16,
        "environments.0.schedule.0.duration",
        "not a duration",
    ),
    (
        "a literal secret",
        "LOG_LEVEL: debug",
        "PASSWORD: {secret: hunter2}",
        7,
        "environments.0.values.PASSWORD.secret",
        "should be a mapping",
    ),
    (
        "a secret with two sources",
        "LOG_LEVEL: debug",
        "PASSWORD: {secret: {env: PW, file: /pw}}",
        7,
        "environments.0.values.PASSWORD.secret",
        "exactly one of `env` or `file`",
    ),
    (
        "a list as a value",
        "LOG_LEVEL: debug",
        "LOG_LEVEL: [debug]",
        7,
        "environments.0.values.LOG_LEVEL",
        "a text, a number, a boolean",
    ),
    (
        "YAML syntax error",
        "      type: local\n",
        "      type: local: x\n",
        5,
        "",
        "YAML syntax error: mapping values are not allowed here",
    ),
    (
        "YAML syntax error found at the end of the file",
        '"0 9 * * 1-5"',
        '"0 9 * * 1-5',
        18,
        "",
        "while scanning a quoted scalar started on line 15",
    ),
    (
        "duplicate environment",
        "        timezone: Europe/Berlin\n",
        "        timezone: Europe/Berlin\n  - name: dev\n    target: {type: local}\n",
        18,
        "environments.1.name",
        "environment 'dev' is defined more than once (first on line 3)",
    ),
    (
        "duplicate key",
        "      type: local\n",
        "      type: local\n      type: kubernetes\n",
        6,
        "environments.0.target.type",
        "duplicate key 'type' (first on line 5)",
    ),
    (
        "set_weight 100 before the last step",
        "- set_weight: 20",
        "- set_weight: 100",
        10,
        "environments.0.strategy.steps",
        "only be the last step",
    ),
    (
        "two kinds in one canary step",
        "- analysis: {}",
        "- {analysis: {}, set_weight: 5}",
        12,
        "environments.0.strategy.steps.1",
        "exactly one of `set_weight`, `pause` or `analysis`",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "field", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_a_bad_file_reports_file_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, field: str, words: str
) -> None:
    assert old in GOOD
    (tmp_path / "shop.yaml").write_text(GOOD.replace(old, new, 1))
    errors = validate_dir(tmp_path)
    assert len(errors) == 1, errors
    (error,) = errors
    assert error.file == str(tmp_path / "shop.yaml")
    assert (error.line, error.field) == (line, field), error
    assert error.column is not None and error.column >= 1
    assert words in error.message
    assert str(error).startswith(f"{tmp_path / 'shop.yaml'}:{line}:")


def test_every_error_of_a_file_is_reported_in_line_order() -> None:
    text = GOOD.replace("- set_weight: 20", "- set_weight: lots").replace("Europe/Berlin", "Mars/Olympus")
    pipeline, errors = parse_pipeline(text, "shop.yaml")
    assert pipeline is None
    assert [(e.line, e.field) for e in errors] == [
        (11, "environments.0.strategy.steps.0.set_weight"),
        (17, "environments.0.schedule.0.timezone"),
    ]


def test_load_pipelines_refuses_an_invalid_directory_with_every_error(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(GOOD.replace("type: local", "tpye: local"))
    (tmp_path / "cart.yaml").write_text("service: cart\nenvironments: [\n")
    with pytest.raises(PipelineConfigInvalid) as caught:
        load_pipelines(tmp_path)
    assert isinstance(caught.value, InvalidInput)
    files = sorted(Path(e.file).name for e in caught.value.errors)
    assert files == ["cart.yaml", "shop.yaml", "shop.yaml"]  # unknown `tpye`, missing `type`
    assert "shop.yaml:5:" in str(caught.value)


def test_two_files_for_one_service_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(GOOD)
    (tmp_path / "shop.yml").write_text(GOOD)
    [error] = validate_dir(tmp_path)
    assert (Path(error.file).name, error.line, error.field) == ("shop.yml", 1, "service")
    assert "already defined in" in error.message and "shop.yaml" in error.message


def test_a_file_is_named_after_its_service(tmp_path: Path) -> None:
    (tmp_path / "checkout.yaml").write_text(GOOD)
    [error] = validate_dir(tmp_path)
    assert (error.line, error.field) == (1, "service")
    assert "shop.yaml" in error.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("", 1, "is a mapping"),
        ("- just\n- a list\n", 1, "is a mapping"),
        ("service: shop\n", 1, "missing required field 'environments'"),
        ("service: shop\nenvironments: []\n", 2, "at least 1 item"),
    ],
)
def test_a_file_that_is_no_pipeline_is_an_error(text: str, line: int, words: str) -> None:
    pipeline, errors = parse_pipeline(text, "shop.yaml")
    assert pipeline is None
    assert [words in e.message for e in errors] == [True], errors
    assert errors[0].line == line


def test_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    [error] = validate_dir(tmp_path / "nowhere")
    assert error == ConfigError(
        file=str(tmp_path / "nowhere"), message="the pipeline config directory does not exist"
    )


def test_other_files_in_the_directory_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(GOOD)
    (tmp_path / "README.md").write_text("# not a pipeline")
    (tmp_path / ".shop.yaml.swp").write_text("garbage: [")
    assert list(load_pipelines(tmp_path)) == ["shop"]


@pytest.mark.parametrize(
    ("target", "line", "field", "words"),
    [
        (
            "      type: kubernets\n",
            5,
            "environments.0.target.type",
            "unknown target type 'kubernets'; known:",
        ),
        (
            "      type: kubernetes\n      settings:\n        namespce: shop\n",
            7,
            "environments.0.target.settings.namespce",
            "unknown setting 'namespce' for a kubernetes target",
        ),
        (
            "      type: kubernetes\n      settings:\n        port: http\n",
            7,
            "environments.0.target.settings.port",
            "valid integer",
        ),
        (
            "      type: dbmigrate\n      settings:\n        database_url: {secret: {env: SHOP_DB}}\n",
            6,
            "environments.0.target.settings.migrations",
            "Field required",
        ),
    ],
    ids=["unknown type", "unknown setting", "bad value", "missing setting"],
)
def test_a_target_is_checked_against_its_own_settings_when_the_pipeline_is_validated(
    tmp_path: Path, target: str, line: int, field: str, words: str
) -> None:
    (tmp_path / "shop.yaml").write_text(GOOD.replace("      type: local\n", target, 1))
    [error] = validate_dir(tmp_path)
    assert (error.line, error.field) == (line, field), error
    assert words in error.message
