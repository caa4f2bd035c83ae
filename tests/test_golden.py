"""Every committed final model still loads and samples as its golden record says.

Bitwise where this process sees as many CPU cores and the same instruction set as the
recording did; elsewhere to the tolerance that XLA:CPU's per-core splitting of reductions needs
(``golden_samples.ATOL``; times ``golden_samples.CROSS_ISA_FP32_FACTOR`` on another
instruction set), and for bfloat16 models on another instruction set to
``golden_samples.CROSS_ISA_BF16`` (largest and mean absolute difference).
"""

import json

import numpy as np
import pytest
from golden_samples import (
    ARRAYS,
    ATOL,
    CROSS_ISA_BF16,
    CROSS_ISA_FP32_FACTOR,
    DEFAULT_ISA,
    RECORD,
    ROOT,
    record_entry,
)

CASES = sorted(json.loads(RECORD.read_text()).items())


@pytest.mark.parametrize("rel,expected", CASES, ids=[c[0] for c in CASES])
def test_committed_final_models_sample_as_recorded(rel, expected, data_dir):
    final = ROOT / rel
    got, arrays = record_entry(final, data_dir)
    assert got["params_sha256"] == expected["params_sha256"], (
        f"{rel}/params.msgpack changed since its golden record; if the run was retrained on "
        "purpose, re-record it with the code of the commit that trained it: "
        f"python tests/golden_samples.py --write {rel}"
    )
    assert set(arrays) == set(expected["samples"])
    want = np.load(ARRAYS)
    same_isa = got["isa"] == expected.get("isa", DEFAULT_ISA)
    config = json.loads((final / "config.json").read_text())
    bf16 = config.get("config", config)["model"]["precision"] == "bf16"
    for call, x in arrays.items():
        ref = want[f"{rel}:{call}"]
        if bf16 and not same_isa:
            diff = np.abs(x - ref)
            assert diff.max() <= CROSS_ISA_BF16["max"], f"{rel}: {call}: max {diff.max():.3g}"
            assert diff.mean() <= CROSS_ISA_BF16["mean"], f"{rel}: {call}: mean {diff.mean():.3g}"
        else:
            atol = ATOL[call] * (1.0 if same_isa else CROSS_ISA_FP32_FACTOR)
            np.testing.assert_allclose(x, ref, rtol=0, atol=atol, err_msg=f"{rel}: {call}")
    if got["cores"] == expected["cores"] and same_isa:
        assert got["samples"] == expected["samples"], "same cores and ISA: must be bitwise"


def test_every_committed_final_model_has_a_golden_record():
    finals = {str(p.relative_to(ROOT)) for p in ROOT.glob("results/*/final")}
    assert finals <= set(dict(CASES)), f"no golden record for {sorted(finals - set(dict(CASES)))}"
