"""Every committed final model still loads and samples bitwise as its golden record says."""

import json

import pytest
from golden_samples import RECORD, ROOT, record_entry

CASES = sorted(json.loads(RECORD.read_text()).items())


@pytest.mark.parametrize("rel,expected", CASES, ids=[c[0] for c in CASES])
def test_committed_final_models_sample_bitwise_as_recorded(rel, expected, data_dir):
    final = ROOT / rel
    got = record_entry(final, data_dir)
    assert got["params_sha256"] == expected["params_sha256"], (
        f"{rel}/params.msgpack changed since its golden record; if the run was retrained on "
        "purpose, re-record it with the code of the commit that trained it: "
        f"python tests/golden_samples.py --write {rel}"
    )
    assert got["samples"] == expected["samples"]


def test_every_committed_final_model_has_a_golden_record():
    finals = {str(p.relative_to(ROOT)) for p in ROOT.glob("results/*/final")}
    assert finals <= set(dict(CASES)), f"no golden record for {sorted(finals - set(dict(CASES)))}"
