"""Release manifests as CI writes them (producers/build.py): the example loads; a bad
one is refused with every error at its line and field, before anything is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.planning.loader import validate_dir
from producers.build import ManifestInvalid, load_manifest, manifest_event

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def test_the_example_manifest_loads_and_becomes_one_event_keyed_by_the_release() -> None:
    manifest = load_manifest(EXAMPLES / "release.yaml")
    assert [(s.service, s.depends_on) for s in manifest.services] == [
        ("orders-schema", []),
        ("orders", ["orders-schema"]),
        ("web", ["orders"]),
    ]
    event = manifest_event(manifest)
    assert event.type == "shiplog.release.manifest.v1"
    assert (event.subject, event.correlationid) == ("release/2026-11-27-1", "2026-11-27-1")


def test_a_bad_manifest_names_each_error_with_its_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "release.yaml"
    path.write_text(
        "release_id: r1\n"
        "services:\n"
        "  - service: api\n"
        "    version: 1.0.0\n"
        "    artifact: a\n"
        "    depend_on: [db]\n"  # a typo
        "  - service: api\n"
        "    artifact: b\n"
    )
    with pytest.raises(ManifestInvalid) as caught:
        load_manifest(path)
    found = {(e.line, e.field, e.message) for e in caught.value.errors}
    assert (6, "services.0.depend_on", "unknown field 'depend_on'") in found
    assert (7, "services.1.version", "missing required field 'version'") in found


def test_the_multi_target_example_pipeline_is_valid() -> None:
    assert validate_dir(EXAMPLES / "multi-target") == []
