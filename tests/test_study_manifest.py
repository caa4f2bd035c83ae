"""``results/study.json`` stays true: every run it names is recorded, loadable and guarded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "results" / "study.json"
GOLDEN = REPO / "tests" / "golden" / "samples.json"


def _named_runs(node: object, key: str = "") -> list[tuple[str, str]]:
    """Every ``results/...`` folder the manifest names, with the key that names it."""
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in _named_runs(v, k)]
    if isinstance(node, list):
        return [r for v in node for r in _named_runs(v, key)]
    if isinstance(node, str) and node.startswith("results/"):
        return [(key, node.rstrip("/"))]
    return []


RUNS = _named_runs(json.loads(MANIFEST.read_text())) if MANIFEST.exists() else []


def test_the_manifest_names_the_study_roles_and_the_evidence_runs():
    manifest = json.loads(MANIFEST.read_text())
    for role in ("q1_default", "q1_alt", "q2_custom", "q2_gaussian", "best"):
        assert manifest[role]["run"].startswith("results/"), role
    groups = manifest["q2_evidence"]
    assert "queued" not in groups or groups["queued"], "an empty 'queued' group: remove it"
    assert "results/q1_default_s1" in groups["seeds"].values()


@pytest.mark.parametrize(("key", "run"), RUNS, ids=[r for _, r in RUNS])
def test_every_named_run_is_recorded_with_its_final_weights(key, run):
    folder = REPO / run
    assert (folder / "config.json").is_file(), f"{key}: {run} has no config.json"
    assert (folder / "metrics.jsonl").is_file(), f"{key}: {run} has no metrics.jsonl"
    assert (folder / "final" / "params.msgpack").is_file(), f"{key}: {run} has no final weights"


def test_every_named_run_outside_the_short_ablations_has_a_golden_record():
    golden = json.loads(GOLDEN.read_text())
    unguarded = sorted(
        {run for _, run in RUNS if not run.startswith("results/ablate/")}
        - {k.removesuffix("/final") for k in golden}
    )
    folders = " ".join(f"{run}/final" for run in unguarded)
    assert not unguarded, f"no golden record: python tests/golden_samples.py --write {folders}"
