"""Write results/q2_evidence.md and its budget plot from the recorded evaluations (issue 28).

Usage:
    python scripts/q2_evidence.py [--results results] [--out results/q2_evidence.md]

Every number comes from an ``experiments/evaluate.py`` ``metrics.json`` or a run's
``metrics.jsonl``; a row whose evaluation is not recorded yet reads "queued" (the jobs are in
``scripts/q2_evidence.jobs``). Rerun it whenever an evaluation lands; it is idempotent.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jaxdiff.app.rundir import read_metrics  # noqa: E402
from jaxdiff.fidelity.metrics import saturated_share  # noqa: E402

Row = tuple[str, str]  # (label, evaluation folder relative to results/)

CONTROLS: list[Row] = [
    ("melt (the recipe)", "q2_melt/eval/ep010_cold2_n5000"),
    ("noise only: identity degradation, same sigma(t)", "q2_ctrl_noise/eval/ep010_cold2_n5000"),
    ("blur only (melt's 0.3-4 px) + the same noise", "q2_ctrl_blur/eval/ep010_cold2_n5000"),
    ("sediment only + the same noise", "q2_ctrl_sediment/eval/ep010_cold2_n5000"),
    ("melt's start mixture alone (no restorer)", "q2_melt/eval/ep010_start_mixture_n5000"),
    (
        "noise-only control's start mixture alone (clean digits, 32 PCs)",
        "q2_ctrl_noise/eval/ep010_start_mixture_n5000",
    ),
    (
        "melt restorer from melted real test digits (oracle start)",
        "q2_melt/eval/ep010_cold2_oracle_n5000",
    ),
    (
        "blur-only restorer from blurred real test digits (oracle start)",
        "q2_ctrl_blur/eval/ep010_cold2_oracle_n5000",
    ),
]
GAUSSIAN: list[Row] = [
    ("melt (the recipe)", "q2_melt/eval/ep010_cold2_n5000"),
    (
        "Gaussian, tuned (v, Min-SNR-5, batch 64, lr from the ablation)",
        "q2_gauss_tuned/eval/ep010_best_n5000",
    ),
    ("Gaussian, untuned (eps, batch 64, lr 1e-3)", "q2_gaussian/eval/ep010_dpmppclip20_n5000"),
]
TUNED_SAMPLERS: list[Row] = [
    ("DPM-Solver++ 20, x0 clipped to data range", "q2_gauss_tuned/eval/ep010_dpmppclipdata20"),
    ("DPM-Solver++ 20, x0 clipped to [-1, 1]", "q2_gauss_tuned/eval/ep010_dpmppclip20"),
    ("DPM-Solver++ 10, x0 clipped to data range", "q2_gauss_tuned/eval/ep010_dpmppclipdata10"),
    ("DPM-Solver++ 50, x0 clipped to data range", "q2_gauss_tuned/eval/ep010_dpmppclipdata50"),
    ("DDIM 50, x0 clipped to data range", "q2_gauss_tuned/eval/ep010_ddimclipdata50"),
]
LR_CHECK: list[Row] = [
    ("lr 1e-3 (the ablation's run)", "ablate/b64_vpred_minsnr/eval/ep002_dpmppclipdata20"),
    ("lr 2e-3", "ablate/b64_vpred_minsnr_lr2e-3/eval/ep002_dpmppclipdata20"),
]
SEEDS: list[Row] = [
    ("melt, seed 0", "q2_melt/eval/ep010_cold2_n5000"),
    ("melt, seed 1", "q2_melt_s1/eval/ep010_cold2_n5000"),
    ("Gaussian tuned, seed 0", "q2_gauss_tuned/eval/ep010_best_n5000"),
    ("Gaussian tuned, seed 1", "q2_gauss_tuned_s1/eval/ep010_best_n5000"),
    ("blur only + noise, seed 0", "q2_ctrl_blur/eval/ep010_cold2_n5000"),
    ("blur only + noise, seed 1", "q2_ctrl_blur_s1/eval/ep010_cold2_n5000"),
]
STARTER_SEEDS: list[tuple[str, str, str, int]] = [
    # label, eval folder, run folder (for its fixed-key grid), epoch
    ("starter recipe, seed 0, epoch 24", "q1_default/eval/ep024_ancestral", "q1_default", 24),
    ("starter recipe, seed 1, epoch 24", "q1_default_s1/eval/ep024_ancestral", "q1_default_s1", 24),
    ("starter recipe, seed 0, epoch 30", "q1_default/eval/ep030_ancestral", "q1_default", 30),
    ("starter recipe, seed 1, epoch 30", "q1_default_s1/eval/ep030_ancestral", "q1_default_s1", 30),
]
BUDGET_EPOCHS = (5, 10, 20, 30)
BUDGET_RUNS = {
    "melt": ("q2_melt_long", "ep{e:03d}_cold2_n5000"),
    "Gaussian tuned": ("q2_gauss_long", "ep{e:03d}_best_n5000"),
}
HEAD = "| model | FD [95% CI] | precision | recall | rarest class | N | sampler |"
RULE = "| --- | --- | --- | --- | --- | --- | --- |"


def _metrics(results: Path, folder: str) -> dict | None:
    path = results / folder / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def _sampler(m: dict) -> str:
    name, steps = m.get("sampler") or "samples", m.get("steps")
    text = f"{name} {steps}" if steps and name not in ("start",) else name
    if m.get("clip_x0"):
        text += f", clip {m['clip_x0']}"
    if m.get("start") == "oracle":
        text += ", oracle start"
    return text


def _row(label: str, m: dict | None, extra: str = "") -> str:
    if m is None:
        return f"| {label} | queued | | | | | |"
    lo, hi = m["fd_ci"]
    rare = 100 * min(m["class_hist"])
    return (
        f"| {label}{extra} | {m['fd']:.1f} [{lo:.1f}, {hi:.1f}] | {m['precision']:.3f} | "
        f"{m['recall']:.3f} | {rare:.1f}% | {m['n']} | {_sampler(m)} |"
    )


def _table(results: Path, rows: list[Row]) -> list[str]:
    return [HEAD, RULE, *(_row(label, _metrics(results, f)) for label, f in rows)]


def _cpu_hours(results: Path, run: str, epoch: int) -> float | None:
    recs = [r for r in read_metrics(results / run / "metrics.jsonl", epoch) if "cpu_s" in r]
    return recs[-1]["cpu_s"] / 3600 if recs and recs[-1].get("epoch") == epoch else None


def _saturation(results: Path, run: str, epoch: int) -> str:
    """The saturated share of the run's fixed-key grid at ``epoch`` (as the report reads it)."""
    path = results / run / "samples" / f"epoch_{epoch:03d}.npy"
    return f"{100 * saturated_share(np.load(path)):.0f}%" if path.exists() else "queued"


def _saturation_rows(results: Path) -> list[str]:
    """Each starter seed's saturated grid share, epoch by epoch from 16 to 30."""
    epochs = range(16, 31)
    lines = [
        "| seed | " + " | ".join(f"ep {e}" for e in epochs) + " |",
        "| --- |" + " --- |" * len(epochs),
    ]
    for seed, run in (("seed 0", "q1_default"), ("seed 1", "q1_default_s1")):
        lines.append(
            f"| {seed} | " + " | ".join(_saturation(results, run, e) for e in epochs) + " |"
        )
    first16 = results / "anchors" / "samples" / "starter_ep24_first16.npy"
    if first16.exists():
        share = 100 * saturated_share(np.load(first16))
        note = f"The PyTorch starter's first 16 samples at epoch 24: {share:.0f}% saturated."
        lines += ["", note]
    return lines


def _budget(results: Path, plot: Path) -> list[str]:
    lines = [
        "| model | epoch | training CPU-hours | FD [95% CI] | precision | recall | rarest class |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    series, intervals = {}, {}
    for name, (run, pattern) in BUDGET_RUNS.items():
        xs, ys, lo, hi = [], [], [], []
        for e in BUDGET_EPOCHS:
            m = _metrics(results, f"{run}/eval/{pattern.format(e=e)}")
            hours = _cpu_hours(results, run, e)
            if m is None or hours is None:
                lines.append(
                    f"| {name} | {e} | {'' if hours is None else f'{hours:.2f}'} | queued | | | |"
                )
                continue
            a, b = m["fd_ci"]
            lines.append(
                f"| {name} | {e} | {hours:.2f} | {m['fd']:.1f} [{a:.1f}, {b:.1f}] | "
                f"{m['precision']:.3f} | {m['recall']:.3f} | {100 * min(m['class_hist']):.1f}% |"
            )
            xs.append(hours), ys.append(m["fd"]), lo.append(a), hi.append(b)
        if xs:
            series[name], intervals[name] = (xs, ys), (lo, hi)
    if series:
        from jaxdiff.app.plotting import plot_curves

        plot_curves(
            series,
            plot,
            "training CPU-hours (2 cores)",
            "FD (LeNet features, N = 5000)",
            title="FD against training budget (constant lr after warm-up, EMA 0.999)",
            logy=True,
            intervals=intervals,
        )
        lines += ["", f"![FD against training CPU-hours]({plot.name})"]
    return lines


def _seed_spread(results: Path) -> list[str]:
    out = []
    for a, b, name in ((0, 1, "melt"), (2, 3, "Gaussian tuned"), (4, 5, "blur only + noise")):
        ma, mb = _metrics(results, SEEDS[a][1]), _metrics(results, SEEDS[b][1])
        if ma is None or mb is None:
            out.append(f"- {name}: queued.")
            continue
        width = np.mean([m["fd_ci"][1] - m["fd_ci"][0] for m in (ma, mb)])
        out.append(
            f"- {name}: seeds differ by {abs(ma['fd'] - mb['fd']):.1f} FD; the mean sampling "
            f"CI width is {width:.1f}."
        )
    return out


FEATURE_SPACES: list[Row] = [
    ("melt", "q2_melt/eval/ep010_cold2_n5000"),
    ("Gaussian, tuned", "q2_gauss_tuned/eval/ep010_best_n5000"),
    ("Gaussian, untuned", "q2_gaussian/eval/ep010_dpmppclip20_n5000"),
    ("noise only", "q2_ctrl_noise/eval/ep010_cold2_n5000"),
    ("blur only", "q2_ctrl_blur/eval/ep010_cold2_n5000"),
    ("sediment only", "q2_ctrl_sediment/eval/ep010_cold2_n5000"),
    ("blur only, seed 1", "q2_ctrl_blur_s1/eval/ep010_cold2_n5000"),
    ("melt, seed 1", "q2_melt_s1/eval/ep010_cold2_n5000"),
    ("Gaussian tuned, seed 1", "q2_gauss_tuned_s1/eval/ep010_best_n5000"),
    ("melt, 30 epochs (constant lr)", "q2_melt_long/eval/ep030_cold2_n5000"),
    ("Gaussian tuned, 30 epochs (constant lr)", "q2_gauss_long/eval/ep030_best_n5000"),
]


def _cell(m: dict | None) -> str:
    if m is None:
        return "queued | | "
    lo, hi = m["fd_ci"]
    return f"{m['fd']:.1f} [{lo:.1f}, {hi:.1f}] | {m['precision']:.3f} | {m['recall']:.3f}"


def _feature_spaces(results: Path) -> list[str]:
    lines = [
        "| model | LeNet FD [95% CI] | precision | recall | MLP FD [95% CI] | precision | recall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, folder in FEATURE_SPACES:
        lenet, mlp = _metrics(results, folder), _metrics(results, folder + "_mlp")
        lines.append(f"| {label} | {_cell(lenet)} | {_cell(mlp)} |")
    return lines


def build(results: Path, out: Path) -> str:
    """Assemble the markdown (and the budget plot beside ``out``)."""
    r = results
    starter = [
        "| run | FD [95% CI] | precision | recall | rarest class | N | saturated grid samples |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, folder, run, epoch in STARTER_SEEDS:
        row = _row(label, _metrics(r, folder)).rsplit("|", 2)[0]
        starter.append(f"{row}| {_saturation(r, run, epoch)} |")
    parts = [
        "# Q2 evidence (issue 28): controls, a tuned Gaussian, budgets, seeds, feature spaces",
        "",
        "Generated by `python scripts/q2_evidence.py` from the recorded evaluations; every run's",
        "command is in `results/RUNS.md` and `scripts/q2_evidence.jobs`. FD uses the shipped",
        "LeNet's features (lower is better); the interval is a bootstrap over samples (sampling",
        "noise only). Rarest class: the share of the least generated digit (10% is balanced).",
        "All Q2 runs share the UNet 32-64-64, batch 64, Adam with clip 1, EMA 0.999, bf16 and",
        "10 epochs unless a table says otherwise; every sample set uses sampling seed 0.",
        "",
        "## 1. Controls: what each part of melt earns (10 epochs, N = 5000, Alg. 2)",
        "",
        *_table(r, CONTROLS),
        "",
        "## 2. The tuned Gaussian counterpart (10 epochs, N = 5000)",
        "",
        *_table(r, GAUSSIAN),
        "",
        "Its learning rate (2 epochs, N = 1000, DPM-Solver++ 20 clipped to the data range):",
        "",
        *_table(r, LR_CHECK),
        "",
        "Its sampler, chosen by the lowest FD at N = 1000 before the N = 5000 headline:",
        "",
        *_table(r, TUNED_SAMPLERS),
        "",
        "## 3. Budgets: 30 epochs, constant learning rate after a 500-step warm-up, EMA 0.999",
        "",
        *_budget(r, out.with_name("q2_budget.png")),
        "",
        "## 4. Seeds (10 epochs, N = 5000)",
        "",
        *_table(r, SEEDS),
        "",
        *_seed_spread(r),
        "",
        "Seed 0 of melt continued from its epoch-6 export after a machine change (Adam's",
        "moments restarted there); seed 1 ran in one piece, as did both Gaussian seeds. So",
        "the melt pair's difference holds the seed and that restart together.",
        "",
        "The starter recipe (CNN, Adam 2e-4, no EMA), ancestral sampler, N = 1000; the last",
        "column is the share of the run's fixed-key 16-sample grid at that epoch that is",
        "saturated (over half its pixels beyond +-1, twice the data range's edge; the report's",
        "measure). Seed 0 restarted Adam's moments at epoch 24 (a machine change); seed 1 ran",
        "30 epochs in one piece, so its epoch-24 row is free of the restart:",
        "",
        *starter,
        "",
        "The same share epoch by epoch from 16 (the grid leaves saturation at the first",
        "epoch under 50%):",
        "",
        *_saturation_rows(r),
        "",
        "## 5. Two feature spaces (N = 5000, the same samples scored by each network)",
        "",
        "The LeNet (the evaluator's default) and an MLP trained apart (784-256-128-128, seed 1,",
        "98.9% test accuracy; `evaluate.py --features mlp`). Real test digits score FD 0.70 in",
        "the LeNet space and 0.26 in the MLP space at N = 5000 (`results/calibration/`).",
        "",
        *_feature_spaces(r),
        "",
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Parse flags and write the markdown."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "q2_evidence.md")
    args = p.parse_args(argv)
    from jaxdiff.paths import atomic_write

    text = build(args.results, args.out)
    atomic_write(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
