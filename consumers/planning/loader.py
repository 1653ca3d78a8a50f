"""A config directory of pipelines: one ``<service>.yaml`` (or ``.yml``) per service.

Every problem becomes a ``ConfigError`` with file, line, column and dotted field
path: the YAML is composed into nodes (which keep their positions) before it is
constructed, and each pydantic error's location is walked back through those
nodes. A missing field points at its parent mapping; an unknown one at its key.
``validate_dir`` reports every error of every file; ``load_pipelines`` raises them
all at once as ``PipelineConfigInvalid`` (an ``InvalidInput``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from consumers.planning.pipeline import PipelineFile
from events.errors import InvalidInput

M = TypeVar("M", bound=BaseModel)

PIPELINE_SUFFIXES = (".yaml", ".yml")
#: files of the config directory that are not pipelines (the notification consumer's)
NOT_PIPELINES = frozenset({"notifications.yaml"})


class ConfigError(BaseModel):
    """One problem in a pipeline file. ``line`` and ``column`` are 1-based (None when
    the problem is the file itself); ``field`` is a dotted path, empty for the file."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None = None
    column: int | None = None
    field: str = ""
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class PipelineConfigInvalid(InvalidInput):
    """The pipeline config has errors; ``errors`` holds every one."""

    def __init__(self, errors: Sequence[ConfigError]):
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{len(self.errors)} error(s) in the pipeline config:\n{lines}")


def load_pipelines(directory: str | Path) -> dict[str, PipelineFile]:
    """Every service's pipeline in ``directory``; raises ``PipelineConfigInvalid`` with
    all errors if there is any."""
    pipelines, errors = _load_dir(Path(directory))
    if errors:
        raise PipelineConfigInvalid(errors)
    return pipelines


def validate_dir(directory: str | Path) -> list[ConfigError]:
    """Every error in the config directory, in file and line order; empty when valid."""
    return _load_dir(Path(directory))[1]


def parse_pipeline(text: str, file: str = "<string>") -> tuple[PipelineFile | None, list[ConfigError]]:
    """One pipeline file's text: the pipeline (None when invalid) and its errors."""
    pipeline, errors, _ = _parse(text, file)
    return pipeline, errors


def pipeline_files(directory: Path) -> list[Path]:
    """The pipeline files of a config directory, sorted; hidden files and the other
    consumers' files (``NOT_PIPELINES``) are skipped."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.suffix in PIPELINE_SUFFIXES
        and not p.name.startswith(".")
        and p.name not in NOT_PIPELINES
        and p.is_file()
    )


def _load_dir(directory: Path) -> tuple[dict[str, PipelineFile], list[ConfigError]]:
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        return {}, [ConfigError(file=str(directory), message=f"the pipeline config directory {what}")]
    pipelines: dict[str, PipelineFile] = {}
    origin: dict[str, str] = {}
    errors: list[ConfigError] = []
    for path in pipeline_files(directory):
        file = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(ConfigError(file=file, message=f"cannot read: {exc}"))
            continue
        pipeline, file_errors, root = _parse(text, file)
        errors += file_errors
        if pipeline is None:
            continue
        service = pipeline.service
        if service != path.stem:
            errors.append(
                _at(
                    file,
                    root,
                    ("service",),
                    f"service {service!r} belongs in {service}.yaml, not {path.name}",
                )
            )
        elif service in pipelines:
            errors.append(
                _at(file, root, ("service",), f"service {service!r} is already defined in {origin[service]}")
            )
        else:
            pipelines[service], origin[service] = pipeline, file
    return pipelines, errors


def _parse(text: str, file: str) -> tuple[PipelineFile | None, list[ConfigError], Node | None]:
    try:
        root, data = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            started = exc.context_mark
            elsewhere = started is not None and (mark is None or started.line != mark.line)
            on_line = f" started on line {started.line + 1}" if elsewhere else ""
            problem += f" ({exc.context}{on_line})"
        return None, [_error_at(file, mark, (), f"YAML syntax error: {problem}")], None
    except yaml.YAMLError as exc:
        return None, [ConfigError(file=file, message=f"YAML syntax error: {exc}")], None
    if root is None or not isinstance(root, MappingNode) or not isinstance(data, dict):
        return (
            None,
            [
                _at(
                    file,
                    root,
                    (),
                    "a pipeline file is a mapping with `service`, `pipeline` and `environments`",
                )
            ],
            root,
        )
    errors = _duplicate_keys(file, root, ()) + _duplicate_environments(file, root)
    try:
        pipeline: PipelineFile | None = PipelineFile.model_validate(data)
    except ValidationError as exc:
        pipeline = None
        errors += [_from_pydantic(file, root, err) for err in exc.errors() if _reportable(err)]
    if pipeline is not None:
        errors += _target_errors(file, root, pipeline)
    if errors:
        return None, sorted(errors, key=lambda e: (e.line or 0, e.column or 0, e.field)), root
    return pipeline, [], root


def parse_document(text: str, file: str, model: type[M]) -> tuple[M | None, list[ConfigError]]:
    """Any YAML document validated as ``model`` (a release manifest, say), with each
    error at its line and field as for pipelines."""
    try:
        root, data = _compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [_error_at(file, mark, (), f"YAML syntax error: {getattr(exc, 'problem', exc)}")]
    if root is None or not isinstance(data, dict):
        return None, [_at(file, root, (), f"expected a mapping ({model.__name__})")]
    errors = _duplicate_keys(file, root, ())
    try:
        found: M | None = model.model_validate(data)
    except ValidationError as exc:
        found = None
        errors += [_from_pydantic(file, root, err) for err in exc.errors()]
    if errors:
        return None, sorted(errors, key=lambda e: (e.line or 0, e.column or 0, e.field))
    return found, []


def _target_errors(file: str, root: Node, pipeline: PipelineFile) -> list[ConfigError]:
    """Each environment's target checked against its type's own settings model: an
    unknown type or setting, a missing or bad value — at validate time, not when the
    first deployment reaches it."""
    from adapters.targets import check_settings

    return [
        _at(file, root, ("environments", index, "target", *loc), message)
        for index, env in enumerate(pipeline.environments)
        for loc, message in check_settings(env.target.type, env.target.settings)
    ]


def _compose(text: str) -> tuple[Node | None, Any]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    finally:
        loader.dispose()
    return root, data


def _reportable(err: ErrorDetails) -> bool:
    # duplicates are found on the nodes, where each one has its own line
    return err["type"] != "duplicate_environment"


def _from_pydantic(file: str, root: Node, err: ErrorDetails) -> ConfigError:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found") and ctx.get("discriminator") == "'type'":
        loc += ("type",)
    path, mark = _locate(root, loc, missing=kind in ("missing", "union_tag_not_found"))
    return _error_at(file, mark, path, _message(err, loc))


def _message(err: ErrorDetails, loc: tuple[str | int, ...]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    name = loc[-1] if loc else ""
    if kind == "missing":
        return f"missing required field {name!r}"
    if kind == "extra_forbidden":
        return f"unknown field {name!r}"
    if kind == "union_tag_not_found":
        return "missing field 'type'"
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return f"should be a mapping, not {_describe(err.get('input'))}"
    if kind == "list_type":
        return f"should be a list, not {_describe(err.get('input'))}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    message = err["msg"]
    value = err.get("input")
    if isinstance(value, str | int | float | bool) and len(repr(value)) <= 60:
        message += f" (got {value!r})"
    return message


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 40 else "a text"
    return f"{type(value).__name__} {value!r}"


def _locate(root: Node, loc: Sequence[str | int], *, missing: bool) -> tuple[list[str | int], Any]:
    """Walk ``loc`` through the nodes: the YAML path it names and the mark to report.

    Segments that are not keys are union tags (a strategy's type, ``plain`` /
    ``secret-ref`` of a value) and are skipped, except a missing field's name."""
    node: Node = root
    mark = root.start_mark
    path: list[str | int] = []
    for i, seg in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, MappingNode):
            entry = _entry(node, seg)
            if entry is not None:
                key, node = entry
                path.append(seg)
                mark = key.start_mark
            elif last and missing:
                path.append(seg)
        elif isinstance(node, SequenceNode) and isinstance(seg, int) and 0 <= seg < len(node.value):
            node = node.value[seg]
            path.append(seg)
            mark = node.start_mark
        else:
            break  # a scalar: what is left are tags of a union over scalars
    return path, mark


def _entry(node: MappingNode, seg: str | int) -> tuple[Node, Node] | None:
    found = None
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.value == str(seg):
            found = (key, value)  # the last one wins, as in the constructed data
    return found


def _at(file: str, root: Node | None, loc: Sequence[str | int], message: str) -> ConfigError:
    if root is None:
        return ConfigError(file=file, line=1, column=1, field=".".join(map(str, loc)), message=message)
    path, mark = _locate(root, loc, missing=True)
    return _error_at(file, mark, path, message)


def _error_at(file: str, mark: Any, path: Sequence[str | int], message: str) -> ConfigError:
    return ConfigError(
        file=file,
        line=mark.line + 1 if mark is not None else None,
        column=mark.column + 1 if mark is not None else None,
        field=".".join(map(str, path)),
        message=message,
    )


def _duplicate_keys(file: str, node: Node, path: tuple[str | int, ...]) -> list[ConfigError]:
    """YAML lets a later key silently replace an earlier one; here it is an error."""
    errors: list[ConfigError] = []
    if isinstance(node, MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, ScalarNode) else None
            if name is not None and name in first:
                errors.append(
                    _error_at(
                        file,
                        key.start_mark,
                        (*path, name),
                        f"duplicate key {name!r} (first on line {first[name]})",
                    )
                )
            elif name is not None:
                first[name] = key.start_mark.line + 1
            errors += _duplicate_keys(file, value, (*path, name if name is not None else "?"))
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            errors += _duplicate_keys(file, item, (*path, i))
    return errors


def _duplicate_environments(file: str, root: MappingNode) -> list[ConfigError]:
    entry = _entry(root, "environments")
    if entry is None or not isinstance(entry[1], SequenceNode):
        return []
    errors: list[ConfigError] = []
    first: dict[str, int] = {}
    for i, item in enumerate(entry[1].value):
        name_entry = _entry(item, "name") if isinstance(item, MappingNode) else None
        if name_entry is None or not isinstance(name_entry[1], ScalarNode):
            continue
        key, value = name_entry
        if value.value in first:
            errors.append(
                _error_at(
                    file,
                    key.start_mark,
                    ("environments", i, "name"),
                    f"environment {value.value!r} is defined more than once (first on line "
                    f"{first[value.value]})",
                )
            )
        else:
            first[value.value] = key.start_mark.line + 1
    return errors
