"""The benchmark's summary arithmetic (not its timings: speed targets live in benchmarks/)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks/bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_best_against_best_pairs_each_librarys_fastest_precision():
    cases = {
        "jaxdiff fp32 train": {"images_per_s": 600.0},
        "jaxdiff bf16 train": {"images_per_s": 550.0},
        "torch fp32 train": {"images_per_s": 400.0},
        "torch bf16 train": {"images_per_s": 700.0},
        "jaxdiff fp32 sample": {"images_per_s": 20.0},
        "jaxdiff bf16 sample": {"images_per_s": 30.0},
        "torch fp32 sample": {"images_per_s": 25.0},
    }
    out = _bench().best_against_best(cases, ["train", "sample"])
    assert out["train"]["jaxdiff"] == "fp32" and out["train"]["torch"] == "bf16"
    assert out["train"]["ratio"] == pytest.approx(600 / 700)
    assert out["sample"]["jaxdiff"] == "bf16" and out["sample"]["torch"] == "fp32"
    assert out["sample"]["ratio"] == pytest.approx(30 / 25)


def test_best_against_best_skips_a_quantity_one_library_did_not_measure():
    cases = {"jaxdiff fp32 train": {"images_per_s": 1.0}}
    assert _bench().best_against_best(cases, ["train"]) == {}
