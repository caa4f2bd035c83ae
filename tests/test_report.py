"""The report pipeline: data and figures from a synthetic results tree, number formatting,
training commands and the word counter."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.kernels import resolve_conv_impl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "report"))  # the report builder lives beside the report
import build  # noqa: E402
import configs  # noqa: E402
import evidence  # noqa: E402
import figures  # noqa: E402
import sections  # noqa: E402
import study  # noqa: E402
import typeset  # noqa: E402
import values  # noqa: E402

#: A recorded run's config.json holds the resolved convolution (``--conv-impl auto`` -> this).
CONV = resolve_conv_impl("auto")


def _config(**train) -> Config:
    return Config(
        model=ModelConfig(hidden=(8, 8), conv_impl=CONV),
        process=ProcessConfig(),
        train=TrainConfig(epochs=4, **train),
    )


def _write_run(root: Path, name: str, cfg: Config, epochs: int, wall_per_epoch: float) -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"config": cfg.to_dict(), "devices": ["TFRT_CPU_0"]})
    )
    rng = np.random.default_rng(0)
    lines = []
    for e in range(1, epochs + 1):
        lines.append(
            {
                "epoch": e,
                "step": 468 * e,
                "loss": 1.0 / e,
                "grad_norm": 1.0,
                "chunk_loss": [1.1 / e, 0.9 / e],
                "epoch_s": wall_per_epoch,
                "images_per_s": 500.0 + e,
                "grid_s": 1.0,
                "wall_s": wall_per_epoch * e,
                "cpu_s": 2 * wall_per_epoch * e,
            }
        )
        grid = rng.uniform(-0.5, 0.5, (4, 28, 28, 1)).astype(np.float32)
        np.save(run / "samples" / f"epoch_{e:03d}.npy", grid)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (run / "final").mkdir()
    (run / "final" / "params.msgpack").write_bytes(b"\0" * 2048)
    return run


def _metrics(fd, ci, kid=1.0, **extra) -> dict:
    m = {
        "n": 1000,
        "fd": fd,
        "fd_ci": list(ci),
        "kid": kid,
        "kid_ci": [kid - 0.5, kid + 0.5],
        "precision": 0.6,
        "recall": 0.5,
        "class_hist": [0.05, 0.15] + [0.1] * 8,
        "class_kl": 0.02,
        "class_tv": 0.05,
        "confidence": 0.8,
        "nn_dist": {"mean": 6.0, "min": 2.0, "p05": 3.0, "median": 6.0, "p95": 8.0},
        "nn_dist_ratio": 1.4,
        "frac_out_of_range": 0.25,
        "frac_confident_0.9": 0.455,
        "floor": {"n": 1000, "fd": 2.5, "fd_ci": [1.0, 4.0], "kid": 0.1, "kid_ci": [-0.2, 0.4]},
    }
    m.update(extra)
    return m


def _titled_grid(path: Path, title: bool = True) -> None:
    """A white PNG like evaluate.py's grids: a thin title band, a white gap, a grey grid."""
    from PIL import Image

    im = np.full((100, 80), 255, np.uint8)
    if title:
        im[4:9, 20:60] = 0  # the title's ink
    im[15:95, 5:75] = 128  # the grid (tiles in grey borders: no white row inside)
    Image.fromarray(im).save(path)


def _write_eval(run: Path, tag: str, metrics: dict, galleries: bool = True) -> None:
    d = run / "eval" / tag
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    if galleries:
        for g in figures.GALLERIES:
            _titled_grid(d / f"{g}.png")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    out = tmp_path_factory.mktemp("report")
    d = _write_run(root, "q1_default", _config(), 4, 60.0)
    for ep, fd, ci in ((2, 200.0, (190.0, 210.0)), (4, 90.0, (85.0, 95.0))):
        m = _metrics(fd, ci, epoch=ep, sampler="ancestral", steps=1000, sample_seconds=700.0)
        _write_eval(d, f"ep{ep:03d}_ancestral1000", m)
    a = _write_run(root, "q1_alt", _config(lr=1e-3), 4, 60.0)
    _write_eval(a, "ep004_ancestral1000", _metrics(120.0, (110.0, 130.0), epoch=4))
    b = _write_run(root, "fast", _config(ema_decay=0.999), 2, 300.0)
    for ep, steps, fd, sec in ((1, 100, 130.0, 70.0), (2, 10, 150.0, 7.0), (2, 50, 80.0, 35.0)):
        m = _metrics(fd, (fd - 5, fd + 5), epoch=ep, sampler="ddim", steps=steps)
        _write_eval(b, f"ep{ep:03d}_ddim{steps}", m | {"sample_seconds": sec})
    # steps from the tag only (no 'epoch'/'sampler'/'steps' keys in metrics.json):
    _write_eval(b, "ep002_ddim100", _metrics(70.0, (66.0, 74.0), sample_seconds=70.0))
    (b / "eval" / "ep002_broken").mkdir()
    (b / "eval" / "ep002_broken" / "metrics.json").write_text("{not json")
    _write_run(root, "not_in_the_study", _config(seed=3), 1, 10.0)
    manifest = {
        "_about": "roles",
        "q1_default": {"run": f"{root.name}/q1_default", "sample": ["--sampler", "ancestral"]},
        "q1_alt": {"run": f"{root.name}/q1_alt", "sample": ["--sampler", "ancestral"]},
        "q2_custom": {"run": f"{root.name}/cold_gone", "sample": ["--sampler", "cold2"]},
        "best": {"run": f"{root.name}/fast", "sample": ["--sampler", "ddim", "--steps", "100"]},
    }
    (root / "study.json").write_text(json.dumps(manifest))
    _write_eval(
        root / "anchors",
        "starter_ep50_jaxdiff_sampler",
        _metrics(104.0, (99.0, 109.0), epoch=50, sampler="ancestral"),
        False,
    )
    anchors = root / "anchors" / "eval"
    _write_eval(root / "anchors", "starter_ep24", _metrics(115.0, (110.0, 120.0)), False)
    _write_eval(root / "anchors", "starter_ep50", _metrics(100.0, (95.0, 105.0)), False)
    assert (anchors / "starter_ep50" / "metrics.json").exists()
    log = [{"epoch": e, "loss": 0.1, "wall_s": 120.0 * e} for e in range(1, 51)]
    log.append({"sampled_epoch": 24, "n": 1000, "sample_s": 750.0})
    (root / "anchors" / "starter_train_log.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in log)
    )
    (root / "bench").mkdir()
    (root / "bench" / "bench.json").write_text(
        json.dumps(
            {
                "config": {
                    "load_avg": [1.5, 1.0, 1.0],
                    "cpu": {"flags": ["avx2", "avx512f", "avx512_bf16", "amx_bf16"], "cores": 2},
                    "resolved_impl": "onednn",
                },
                "cases": {
                    "jaxdiff fp32 train": {"images_per_s": 800.0, "gflops": 384.0},
                    "torch fp32 train": {"images_per_s": 500.0, "gflops": 240.0},
                },
                "ratios": {"fp32 train": 1.6},
                "best_against_best": {"train": {"jaxdiff": "fp32", "torch": "fp32", "ratio": 1.6}},
            }
        )
    )
    # issue 28's evidence: one sample set in two feature spaces, a budget run at two epochs
    cold = {"sampler": "cold2", "steps": 50, "epoch": 10, "n": 5000}
    lenet = _metrics(12.0, (11.0, 13.0), **cold)
    _write_eval(root / "q2_melt", "ep010_cold2_n5000", lenet, galleries=False)
    mlp = _metrics(5.0, (4.0, 6.0), **cold, precision=0.8, features="mlp")
    _write_eval(root / "q2_melt", "ep010_cold2_n5000_mlp", mlp, galleries=False)
    long = _write_run(root, "q2_melt_long", _config(), 10, 90.0)
    for ep, fd in ((5, 20.0), (10, 10.0)):
        m = _metrics(fd, (fd - 1, fd + 1), **(cold | {"epoch": ep}))
        _write_eval(long, f"ep{ep:03d}_cold2_n5000", m, galleries=False)
    summary = build.build_report_data(root, out)
    data = {p.stem: json.loads(p.read_text()) for p in (out / "data").glob("*.json")}
    return root, out, summary, data


def _n(data, key):
    return data["numbers"][key]


def test_headline_numbers_come_from_the_latest_evaluation(built):
    _, _, _, data = built
    assert _n(data, "eval.q1_default.fd")["v"] == 90.0
    assert _n(data, "eval.q1_default.fd_ci")["s"] == "90.0 [85.0, 95.0]"
    assert _n(data, "eval.q1_default.epoch")["v"] == 4
    assert _n(data, "eval.q1_default.oor_pct")["v"] == pytest.approx(25.0)
    assert _n(data, "eval.q1_default.sure_pct")["v"] == pytest.approx(45.5)
    assert _n(data, "eval.q1_default.sure_pct")["s"] == "46"
    assert _n(data, "floor.sure_pct")["s"] == "–"  # not recorded with this floor
    assert _n(data, "eval.q1_default.rarest_digit")["v"] == 0
    assert _n(data, "eval.q1_default.commonest_digit")["v"] == 1
    assert _n(data, "eval.q1_default.nn_close")["v"] is False
    assert _n(data, "eval.q1_default.sec_per_1k")["v"] == pytest.approx(700.0)
    # best prefers its DDIM evaluation with the most steps at its latest epoch; epoch and
    # steps of ep002_ddim100 come from the tag.
    assert _n(data, "eval.best.tag")["v"] == "ep002_ddim100"
    assert _n(data, "eval.best.steps")["v"] == 100
    assert _n(data, "eval.best.fd")["v"] == 70.0
    assert _n(data, "anchor.starter_ep50.fd")["v"] == 100.0
    assert _n(data, "anchor.starter_ep50.epoch")["v"] == 50
    assert _n(data, "anchor.starter_ep50.train_wall_min")["v"] == pytest.approx(100.0)
    assert _n(data, "floor.fd")["v"] == 2.5


def test_run_numbers_and_config_diff(built):
    _, _, _, data = built
    assert _n(data, "run.q1_default.wall_h")["v"] == pytest.approx(240.0 / 3600)
    assert _n(data, "run.q1_default.cpu_h")["v"] == pytest.approx(480.0 / 3600)
    assert _n(data, "run.q1_default.final_loss")["v"] == pytest.approx(0.25)
    assert _n(data, "run.q1_default.img_s")["v"] == pytest.approx(502.5)
    assert _n(data, "run.q1_default.final_kb")["v"] == pytest.approx(2.0)
    assert _n(data, "run.q1_alt.diff")["v"] == ["learning rate 0.0002 -> 0.001"]
    assert _n(data, "run.q1_alt.diff")["s"] == "learning rate 0.0002 → 0.001"
    # parameter count equals the initialised model's
    import jax

    from jaxdiff.pipeline import build, init_params

    params = init_params(build(_config()), jax.random.PRNGKey(0))
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert _n(data, "run.q1_default.params")["v"] == n
    rows = {r[0]: r for r in data["tables"]["runs"]["rows"]}
    disp = {r.name: r.display for r in study.KNOWN_RUNS}
    # the study's roles only, in role order; a folder the manifest does not name is left out
    assert list(rows) == [disp["q1_default"], disp["q1_alt"], disp["best"]]
    assert rows[disp["q1_default"]][7] == "4/4"


def test_every_evaluation_and_extra_anchors_have_numbers(built):
    _, _, _, data = built
    assert _n(data, "ev.q1_default.ep002_ancestral1000.fd")["v"] == 200.0
    assert _n(data, "ev.best.ep002_ddim10.steps")["v"] == 10
    # an anchor evaluation other than the starter's own samples: numbers and a table row
    assert _n(data, "anchor.starter_ep50_jaxdiff_sampler.fd_ci")["s"] == "104.0 [99.0, 109.0]"
    rows = {r[0] for r in data["tables"]["fidelity"]["rows"]}
    assert study.EXTRA_ANCHORS["starter_ep50_jaxdiff_sampler"] in rows
    # ... but no curve of its own: the time-to-quality targets are the starter's samples
    assert not any("jaxdiff_sampler" in k for k in data["numbers"] if k.startswith("ttq."))


def test_manifest_sampler_reads_the_sample_flags():
    assert study.manifest_sampler(["--sampler", "ddim", "--steps", "100", "--clip-x0"], "x") == (
        "ddim-clip"
    )
    assert study.manifest_sampler(["--sampler", "cold2", "--data-dir", "d"], "x") == "cold2"
    assert study.manifest_sampler([], "ancestral") == "ancestral"


def test_comparisons(built):
    _, _, _, data = built
    # alt (120 [110, 130]) against default (90 [85, 95]): worse, intervals disjoint
    assert _n(data, "cmp.q1.fd.a_better")["v"] is False
    assert _n(data, "cmp.q1.fd.separated")["v"] is True
    assert _n(data, "cmp.q1.fd.ratio")["v"] == pytest.approx(120 / 90)
    # best (70 [66, 74]) against default: better, disjoint
    assert _n(data, "cmp.best.fd.a_better")["v"] is True
    assert _n(data, "cmp.best.fd.separated")["v"] is True
    assert "cmp.q2.fd.a_better" not in data["numbers"]  # no cold run recorded


def test_time_to_quality(built):
    _, _, _, data = built
    # best's epoch series is ddim100 (epochs 1 and 2: FD 130, 70); the starter's 50-epoch
    # FD 100 is first beaten at epoch 2, after 600 s wall / 1200 s CPU; the starter needed
    # 6000 s, so 10x sooner.
    assert _n(data, "ttq.best.starter_ep50.epoch")["v"] == 2
    assert _n(data, "ttq.best.starter_ep50.wall_min")["v"] == pytest.approx(10.0)
    assert _n(data, "ttq.best.starter_ep50.cpu_min")["v"] == pytest.approx(20.0)
    assert _n(data, "ttq.best.starter_ep50.wall_speedup")["v"] == pytest.approx(10.0)
    assert _n(data, "ttq.q1_alt.starter_ep50.reached")["v"] is False
    assert _n(data, "ttq.q1_default.starter_ep24.epoch")["v"] == 4
    pts = data["series"]["ttq"]["best"]
    assert [p["epoch"] for p in pts] == [1, 2] and [p["fd"] for p in pts] == [130.0, 70.0]


def test_steps_table_and_bench(built):
    _, _, _, data = built
    rows = [r for r in data["tables"]["steps"]["rows"] if r[0] == "Best recipe"]
    assert [r[3] for r in rows] == ["10", "50", "100"]
    assert [r[5].split()[0] for r in rows] == ["150.0", "80.0", "70.0"]
    assert [r[-1] for r in rows] == ["7.0", "35.0", "70.0"]
    assert _n(data, "bench.ratio.fp32_train")["v"] == pytest.approx(1.6)
    assert _n(data, "bench.jaxdiff_fp32_train.img_s")["v"] == 800.0
    assert _n(data, "bench.best.train")["v"] == pytest.approx(1.6)
    assert _n(data, "bench.isa")["s"] == "AVX-512 with bf16 and AMX"
    assert _n(data, "bench.impl")["s"] == "onednn"
    assert len(data["tables"]["bench"]["rows"]) == 2
    fid = {r[0]: r for r in data["tables"]["fidelity"]["rows"]}
    assert fid["PyTorch starter, epoch 24"][4] == "115.0 [110.0, 120.0]"
    assert "real test images (floor)" in fid


def test_evidence_pairs_feature_spaces_and_reads_budget_hours(built):
    _, _, _, data = built
    rows = {r[0]: r for r in data["tables"]["q2_features"]["rows"]}
    assert rows["melt"] == ["melt", "12.0 [11.0, 13.0]", "5.0 [4.0, 6.0]", "0.800", "0.500"]
    assert "blur only + noise" not in rows  # no LeNet evaluation recorded: no row
    budget = data["tables"]["q2_budget"]["rows"]
    # CPU hours at the epoch's end: 2 x 90 s per epoch (the synthetic log) x epochs / 3600
    assert budget[:2] == [
        ["melt", "5", "0.25", "20.0 [19.0, 21.0]", "0.600", "0.500", "5.0"],
        ["melt", "10", "0.50", "10.0 [9.0, 11.0]", "0.600", "0.500", "5.0"],
    ]
    assert budget[2][3] == "pending"  # epoch 20 not evaluated
    assert _n(data, "ex.q2_budget.ready")["v"] is False
    assert [p["epoch"] for p in data["series"]["budget"]["melt"]] == [5, 10]


def test_copied_grids_lose_their_title_band_only(tmp_path):
    from PIL import Image

    figs = figures.FigureSet(tmp_path)
    _titled_grid(tmp_path / "titled.png")
    _titled_grid(tmp_path / "plain.png", title=False)
    figs.copy_untitled(tmp_path / "titled.png", "a.png")
    figs.copy_untitled(tmp_path / "plain.png", "b.png")
    figs.copy_untitled(tmp_path / "missing.png", "c.png")
    a, b = (np.asarray(Image.open(tmp_path / n).convert("L")) for n in ("a.png", "b.png"))
    assert a.shape == (85, 80) and (a[:80] == 128).any(axis=1).all()  # starts at the grid
    assert b.shape == (100, 80)  # no title: nothing cropped, not even the grid's top
    assert figs.names == ["a.png", "b.png"]


def test_figures_exist_and_missing_inputs_are_notes(built):
    _, out, summary, data = built
    for name in (
        "loss.png",
        "gallery_q1_default_confident.png",
        "gallery_q1_alt_unconfident.png",
        "budget.png",
    ):
        assert (out / "figures" / name).stat().st_size > 0, name
        assert name in data["figures"]
    assert set(data["figures"]) == {p.name for p in (out / "figures").glob("*.png")}
    notes = "\n".join(summary["notes"])
    assert "role q2_custom" in notes and "cold_gone is missing" in notes
    assert "role q2_gaussian" in notes and "not in" in notes
    assert "ep002_broken" in notes  # unreadable JSON is a note, not a crash
    assert data["notes"] == summary["notes"]


def test_missing_results_tree_builds_empty_tables(tmp_path):
    summary = build.build_report_data(tmp_path / "nothing", tmp_path / "rep")
    assert "does not exist" in summary["notes"][0]
    tables = json.loads((tmp_path / "rep" / "data" / "tables.json").read_text())
    assert all(t["rows"] == [] for t in tables.values())
    assert json.loads((tmp_path / "rep" / "data" / "figures.json").read_text()) == []


def test_parse_tag():
    anc = {"epoch": 10, "sampler": "ancestral", "steps": 1000}
    assert study.parse_tag("ep010_ancestral1000") == anc
    assert study.parse_tag("ep010_ddim100") == {"epoch": 10, "sampler": "ddim", "steps": 100}
    assert study.parse_tag("ep005_cold2") == {"epoch": 5, "sampler": "cold2", "steps": None}
    assert study.parse_tag("starter_ep24")["epoch"] == 24
    assert study.parse_tag("final") == {"epoch": None, "sampler": None, "steps": None}


SNIPPET = """// a comment with words
#set text(size: 10pt)
#let helper(x) = [hidden words here]
= Intro heading <intro>
Hello *bold* _world_ with `raw code` and $x^2 + y$ math. See @ref1.
#figure(image("a.png"), caption: [Two words])
Value #num("eval.q1_default.fd") here.
#if true [yes branch] else [no branch]
/* block
comment */ tail
"""


def test_count_words_on_a_snippet():
    # Intro heading | Hello bold world with and math. See ref | Two words | Value here |
    # yes branch no branch | tail
    assert typeset.count_words(SNIPPET) == 2 + 8 + 2 + 2 + 4 + 1
    text = typeset.prose_text(SNIPPET)
    for hidden in ("comment", "hidden", "raw", "x^2", "size", "a.png", "eval.q1", "block"):
        assert hidden not in text


def test_report_source_within_the_word_limit():
    words = typeset.count_words((REPO / "report" / "report.typ").read_text())
    assert 500 < words <= typeset.WORD_LIMIT


def test_report_source_keeps_semicolons_after_numbers():
    # In Typst markup `#num("k");` ends the call and swallows the semicolon; write `\;`.
    src = (REPO / "report" / "report.typ").read_text()
    bad = [m.group(0) for m in re.finditer(r'#[a-z]+\("[^"]*"\);', src)]
    assert not bad, f"semicolons Typst would swallow: {bad}"


def test_report_source_writes_no_straight_apostrophe_after_a_digit_or_reference():
    # Typst sets `seed 0's` and `@tab-x's` with a prime (0′s); write the apostrophe as ’.
    src = (REPO / "report" / "report.typ").read_text()
    bad = re.findall(r"(?:\b\w*\d|@[\w-]+)'s\b", src)
    assert not bad, f"apostrophes Typst would set as primes: {bad}"


def test_pdf_compiles_from_the_synthetic_tree(built, tmp_path):
    pytest.importorskip("typst")
    _, out, _, _ = built
    rep = tmp_path / "report"
    shutil.copytree(out, rep)
    for f in ("report.typ", "refs.yml"):
        shutil.copy(REPO / "report" / f, rep / f)
    pdf = typeset.compile_pdf(rep)
    assert pdf.read_bytes()[:5] == b"%PDF-"


def test_training_command_round_trips_the_config(built):
    _, _, _, data = built
    root = built[0]
    # the report's listing holds the commands of the time table's runs, those present
    listed = {c["run"]: c["command"] for c in data["time_commands"]}
    assert list(listed) == ["q1_default", "q1_alt"]
    assert listed["q1_alt"] == (
        "python experiments/ddpm.py --hidden 8,8 --lr 0.001 --epochs 4 --workdir results/q1_alt"
    )
    assert _n(data, "run.q1_alt.command")["v"] == (
        "python experiments/ddpm.py --hidden 8,8 --lr 0.001 --epochs 4 "
        f"--workdir {(root / 'q1_alt').as_posix()}"
    )
    cold = Config(
        model=ModelConfig(name="unet", hidden=(8, 16, 16), attention=True, conv_impl=CONV),
        process=ProcessConfig(kind="cold", T=20, degradation="blur", loss="l1"),
        train=TrainConfig(epochs=3, ema_decay=0.99, seed=5),
    )
    c = configs.training_command(cold.to_dict(), "results/c")
    assert c.startswith("python experiments/cold.py --model unet --degradation blur ")
    assert "--attention" in c and "--T 20" in c and "--loss l1" in c and "--ema 0.99" in c
    assert "--noise 0.0" in c  # cold.py's default is the noisy melt recipe
    # flags are named after the config's fields: a newer flag (here --prediction) needs no table
    vpred = Config(
        model=ModelConfig(conv_impl=CONV),
        process=ProcessConfig(prediction="v", weighting="min_snr"),
    ).to_dict()
    assert configs.training_command(vpred, "results/v") == (
        "python experiments/ddpm.py --prediction v --weighting min_snr --workdir results/v"
    )
    # a setting no flag reaches (last_kernel_size) has no command
    odd = Config(model=ModelConfig(last_kernel_size=5)).to_dict()
    assert configs.training_command(odd, "results/x") is None


def test_clipped_ddim_is_its_own_sampler(tmp_path):
    run = tmp_path / "r"
    _write_eval(run, "ep004_ddim100", _metrics(56.0, (52.0, 61.0), epoch=4, sampler="ddim"))
    clipped = _metrics(52.0, (48.0, 56.0), epoch=4, sampler="ddim", clip_x0=True)
    _write_eval(run, "ep004_ddimclip100", clipped | {"steps": 100})
    notes: list[str] = []
    plain = study.load_eval(run / "eval" / "ep004_ddim100", notes)
    clip = study.load_eval(run / "eval" / "ep004_ddimclip100", notes)
    assert (plain.sampler, plain.steps) == ("ddim", 100)
    assert (clip.sampler, clip.steps) == ("ddim-clip", 100)
    assert values.sampler_text(clip) == "DDIM (x0 clipped) 100" and not notes
    assert study.clipped_name("dpmpp", "data") == "dpmpp-clip-data"
    assert study.clipped_name("ancestral", True) == "ancestral"
    assert (
        study.manifest_sampler(["--sampler", "dpmpp", "--clip-x0", "data"], "x")
        == "dpmpp-clip-data"
    )


def test_epoch_series_never_mixes_sampling_settings(tmp_path):
    run = _write_run(tmp_path, "melt", _config(), 4, 60.0)
    cold = {"sampler": "cold2", "steps": 50}
    _write_eval(run, "ep002_cold2", _metrics(50.0, (45.0, 55.0), epoch=2, **cold), False)
    _write_eval(run, "ep004_cold2", _metrics(30.0, (27.0, 33.0), epoch=4, **cold), False)
    big = _metrics(28.0, (27.0, 29.0), epoch=4, **cold) | {"n": 5000}
    _write_eval(run, "ep004_cold2_n5000", big, False)
    noisy = _metrics(45.0, (40.0, 50.0), epoch=4, noise=0.05, **cold)
    _write_eval(run, "ep004_cold2_stoch", noisy, False)
    raw = _metrics(70.0, (65.0, 75.0), epoch=4, weights="raw", **cold)
    _write_eval(run, "ep004_cold2_raw", raw, False)
    notes: list[str] = []
    series = study.epoch_series(study.read_run_record(run, None, notes))
    # sample noise and raw weights are other settings; N nearest 1000 wins at epoch 4
    assert [e.tag for e in series] == ["ep002_cold2", "ep004_cold2"]
    assert study.sampling_setting(series[0]) == ("cold2", 50, 0.0, None, "ema", "fitted")


def test_an_oracle_start_is_its_own_setting_never_a_matched_headline(tmp_path):
    # melt's evaluation from melted test digits (start "oracle") must not stand in for the
    # model at equal N: the Q2 comparison once picked it by its tag
    a = _write_run(tmp_path, "a", _config(), 10, 60.0)
    b = _write_run(tmp_path, "b", _config(), 10, 60.0)
    cold = {"sampler": "cold2", "steps": 50, "epoch": 10}
    _write_eval(a, "ep010_cold2_n10000", _metrics(11.0, (10.0, 12.0), **cold) | {"n": 10000}, False)
    _write_eval(a, "ep010_cold2_n5000", _metrics(12.0, (11.0, 13.0), **cold) | {"n": 5000}, False)
    oracle = _metrics(9.0, (8.0, 10.0), **cold) | {"n": 5000, "start": "oracle"}
    _write_eval(a, "ep010_cold2_oracle_n5000", oracle, False)
    _write_eval(b, "ep010_cold2_n5000", _metrics(15.0, (14.0, 16.0), **cold) | {"n": 5000}, False)
    ra, rb = (study.read_run_record(r, None, []) for r in (a, b))
    ea, eb = study.matched_pair(ra, rb)
    assert (ea.tag, eb.tag) == ("ep010_cold2_n5000", "ep010_cold2_n5000")


def test_evidence_rows_read_pending_until_their_evaluation_lands(tmp_path):
    res = tmp_path / "results"
    run = _write_run(res, "q2_melt", _config(), 10, 60.0)
    cold = {"sampler": "cold2", "steps": 50, "epoch": 10}
    _write_eval(run, "ep010_cold2_n5000", _metrics(12.0, (11.0, 13.0), **cold) | {"n": 5000}, False)
    s = study.Study(res, {}, {}, [], None, [])
    out = values.Values()
    evidence._rows(s, out, "q2_controls", evidence.CONTROL_ROWS, pending=True)
    rows = out.tables["q2_controls"]["rows"]
    assert rows[0][4] == "12.0 [11.0, 13.0]" and out.numbers["ex.q2_controls.melt.ready"]["v"]
    assert [r[4] for r in rows[1:]] == ["pending"] * (len(evidence.CONTROL_ROWS) - 1)
    assert out.numbers["ex.q2_controls.noise.ready"]["v"] is False


def test_matched_pair_compares_two_runs_at_one_n(tmp_path):
    a = _write_run(tmp_path, "a", _config(), 4, 60.0)
    b = _write_run(tmp_path, "b", _config(), 4, 60.0)
    cold = {"epoch": 4, "sampler": "cold2", "steps": 50}
    _write_eval(a, "ep004_cold2", _metrics(13.0, (11.0, 15.0), **cold), False)
    _write_eval(a, "ep004_cold2_n10000", _metrics(12.0, (11.5, 12.5), **cold) | {"n": 10000}, False)
    _write_eval(b, "ep004_cold2", _metrics(20.0, (18.0, 22.0), **cold), False)
    notes: list[str] = []
    ra, rb = (study.read_run_record(r, None, notes) for r in (a, b))
    assert study.headline_eval(ra).tag == "ep004_cold2_n10000"  # alone, the most samples
    ea, eb = study.matched_pair(ra, rb)
    assert (ea.tag, eb.tag) == ("ep004_cold2", "ep004_cold2")
    ea, eb = study.matched_pair(rb, ra)  # either order
    assert (ea.tag, eb.tag) == ("ep004_cold2", "ep004_cold2")
    assert study.matched_pair(ra, None) == (study.headline_eval(ra), None)


def test_cold_analysis_tables_and_numbers(tmp_path):
    root = tmp_path / "results"
    cold = Config(
        model=ModelConfig(hidden=(8, 8), conv_impl=CONV),
        process=ProcessConfig(kind="cold", T=50, degradation="melt"),
        train=TrainConfig(epochs=2),
    )
    run = _write_run(root, "melt", cold, 2, 10.0)
    pair = {"mean": 9.5, "median": 9.4, "p05": 6.0, "p95": 12.0}
    rows = {
        "real test": {"fd": 2.0, "fd_ci": [1.0, 3.0], "recall": 0.9, "class_hist": [0.1] * 10},
        "fitted": {
            "fd": 40.0,
            "fd_ci": [38.0, 42.0],
            "recall": 0.6,
            "class_hist": [0.02] + [0.98 / 9] * 9,
        },
    }
    for r in rows.values():
        r["pairwise"] = pair
    (run / "analysis").mkdir()
    (run / "analysis" / "start_states.json").write_text(json.dumps({"n": 1000, "rows": rows}))
    times = [
        {"t": t, "mse_input": 0.1 * t, "mse_one_shot": 0.01 * t, "mse_restored": 0.02 * t}
        for t in (1, 50)
    ]
    (run / "analysis" / "restoration.json").write_text(json.dumps({"n": 500, "times": times}))
    (root / "study.json").write_text(json.dumps({"q2_custom": {"run": "results/melt"}}))
    build.build_report_data(root, tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "data" / "numbers.json").read_text())
    tables = json.loads((tmp_path / "rep" / "data" / "tables.json").read_text())
    assert data["an.q2_custom.fitted.fd_ci"]["s"] == "40.0 [38.0, 42.0]"
    assert data["an.q2_custom.fitted.min_class"]["v"] == pytest.approx(0.02)
    assert data["an.q2_custom.real_test.pair_mean"]["v"] == 9.5
    assert data["an.q2_custom.rest.t50.mse_restored"]["v"] == pytest.approx(1.0)
    assert [r[0] for r in tables["start_q2_custom"]["rows"]] == ["real test", "fitted"]
    assert tables["restoration_q2_custom"]["rows"][0] == ["1", "0.1000", "0.0100", "0.0200"]


def test_a_grid_leaves_saturation_at_the_first_epoch_under_half_saturated(tmp_path):
    run = tmp_path / "seed1"
    (run / "samples").mkdir(parents=True)
    for e, n_saturated in ((1, 4), (2, 2), (3, 1), (10, 0)):  # of 4 samples
        x = np.zeros((4, 28, 28, 1), np.float32)
        x[:n_saturated] = -3.0
        np.save(run / "samples" / f"epoch_{e:03d}.npy", x)
    shares = values.grid_saturation(run)
    assert shares == {1: 1.0, 2: 0.5, 3: 0.25, 10: 0.0}
    assert values.first_clean_epoch(shares) == 3  # half saturated is not clean yet
    assert values.first_clean_epoch({1: 1.0, 2: 0.75}) is None
    assert values.clean_by(shares, 3) is True and values.clean_by(shares, 2) is False
    assert values.clean_by({1: 1.0, 2: 0.75}, 24) is None  # not yet known
    assert values.clean_by({}, 24) is None
    assert values.grid_saturation(tmp_path / "no_such_run") == {}


def test_seed_grids_read_each_seed_run_and_leave_a_missing_one_empty(built):
    _, _, _, data = built
    assert _n(data, "ex.q1_seed.s0.grid_epoch")["v"] == 4  # q1_default's 4 clean grids
    assert _n(data, "ex.q1_seed.s0.first_clean_epoch")["v"] == 1
    assert _n(data, "ex.q1_seed.s0.clean_by_24")["v"] is True  # clean at 1, before 24
    assert _n(data, "ex.q1_seed.s1.clean_by_24")["v"] is None  # unknown, not False
    assert _n(data, "ex.q1_seed.first_clean_gap")["v"] is None  # needs both seeds
    assert _n(data, "ex.q1_seed.s1.grid_epoch")["v"] is None  # no seed-1 run recorded
    assert _n(data, "ex.q1_seed.s1.first_clean_epoch")["s"] == "–"


def test_seed_grids_say_how_many_epochs_apart_the_seeds_leave_saturation(tmp_path):
    for run, first in (("q1_default", 28), ("q1_default_s1", 19)):
        (tmp_path / run / "samples").mkdir(parents=True)
        for e in range(17, 31):
            x = np.full((4, 28, 28, 1), 3.0 if e < first else 0.0, np.float32)
            np.save(tmp_path / run / "samples" / f"epoch_{e:03d}.npy", x)
    out = values.Values()
    evidence._seed_grids(study.Study(tmp_path, {}, {}, [], None, []), out)
    assert out.numbers["ex.q1_seed.s1.first_clean_epoch"]["v"] == 19
    assert out.numbers["ex.q1_seed.s0.clean_by_24"]["v"] is False
    assert out.numbers["ex.q1_seed.s1.clean_by_24"]["v"] is True
    assert out.numbers["ex.q1_seed.s0.sat24_pct"]["v"] == 100.0
    assert out.numbers["ex.q1_seed.first_clean_gap"]["v"] == 9


def test_seed_spread_sets_two_seeds_against_their_sampling_intervals():
    out = values.Values()
    for key, fd, ci in (("d30", 132.5, [127.3, 137.6]), ("s1e30", 120.0, [115.0, 125.0])):
        out.put(f"ex.q1.{key}.fd", fd)
        out.put(f"ex.q1.{key}.fd_ci", ci)
    evidence._seed_spread(out)
    assert out.numbers["ex.seed.starter_e30.diff"]["v"] == pytest.approx(12.5)
    assert out.numbers["ex.seed.starter_e30.ci_width"]["v"] == pytest.approx((10.3 + 10.0) / 2)
    assert out.numbers["ex.seed.starter_e30.overlap"]["v"] is False  # 125.0 < 127.3
    assert "ex.seed.melt.diff" not in out.numbers  # a pair with a missing seed is skipped
    out.put("ex.q1.s1e30.fd_ci", [118.0, 128.0])
    evidence._seed_spread(out)
    assert out.numbers["ex.seed.starter_e30.overlap"]["v"] is True


def test_budget_gaps_compare_the_two_curves_epoch_by_epoch():
    out = values.Values()
    curves = {
        "melt": {5: (18.0, [17.0, 19.0]), 20: (8.0, [7.0, 9.0]), 30: (7.5, [6.5, 8.5])},
        "tuned": {5: (26.0, [25.0, 27.0]), 30: (8.0, [7.0, 9.0])},  # no epoch-20 point
    }
    for key, pts in curves.items():
        for e, (fd, ci) in pts.items():
            out.put(f"ex.q2_budget.{key}_e{e}.fd", fd)
            out.put(f"ex.q2_budget.{key}_e{e}.fd_ci", ci)
    evidence._budget_gaps(out)
    n = out.numbers
    assert n["ex.q2_budget.gap_e5"]["v"] == pytest.approx(8.0)
    assert n["ex.q2_budget.overlap_e5"]["v"] is False  # [17, 19] against [25, 27]
    assert n["ex.q2_budget.gap_e30"]["s"] == "0.5"
    assert n["ex.q2_budget.overlap_e30"]["v"] is True
    assert "ex.q2_budget.gap_e20" not in n  # one side missing: no gap, not a zero
    assert n["ex.q2_budget.melt_gain_last"]["v"] == pytest.approx(0.5)
    assert n["ex.q2_budget.tuned_gain_last"]["s"] == "–"


def test_a_source_that_does_not_compile_is_one_clear_error(tmp_path):
    pytest.importorskip("typst")
    (tmp_path / "report.typ").write_text("#let x = (\n")
    with pytest.raises(ValueError, match="report.typ does not compile"):
        typeset.compile_pdf(tmp_path)


def test_ablation_rows_from_study_json_with_a_variant_judged_by_its_own_tag(tmp_path):
    root = tmp_path / "results"
    base = _write_run(root, "base", _config(), 2, 60.0)
    lr = _write_run(root, "lr", _config(lr=2e-3), 2, 60.0)
    _write_eval(base, "ep002_x", _metrics(100.0, (95.0, 105.0)), False)
    _write_eval(base, "ep002_x_raw", _metrics(96.0, (91.0, 101.0)), False)
    _write_eval(lr, "ep002_x", _metrics(80.0, (75.0, 85.0)), False)
    variants = {
        "lr 2e-3": "results/lr",
        "raw weights": {"run": "results/base", "eval": "ep002_x_raw", "change": "no EMA"},
        "missing": "results/gone",
    }
    ablation = {"run": "results/base", "eval": "ep002_x", "variants": variants}
    (root / "study.json").write_text(json.dumps({"ablation": ablation}))
    out = tmp_path / "report"
    summary = build.build_report_data(root, out)
    rows = json.loads((out / "data" / "tables.json").read_text())["ablation"]["rows"]
    assert [r[0] for r in rows] == ["base", "lr 2e-3", "raw weights"]
    assert rows[2][1] == "no EMA" and rows[2][4] == "-4.0"
    assert rows[1][1] == "learning rate 0.0002 → 0.002" and rows[1][4] == "-20.0"
    assert any("ablation missing" in n for n in summary["notes"])


def test_config_diff_reads_a_setting_a_config_predates_as_its_default():
    old = {"model": {"name": "unet"}, "train": {"lr": 1e-3}}
    new = {"model": {"name": "unet", "res_blocks": 1}, "train": {"lr": 1e-3}}
    assert configs.config_diff(old, new) == []
    deep = {"model": {"name": "unet", "res_blocks": 2}, "train": {"lr": 1e-3}}
    assert configs.config_diff(old, deep) == ["residual blocks per level 1 -> 2"]


def _other_conv() -> str:
    """A convolution other than the one ``--conv-impl auto`` resolves to here."""
    from jaxdiff.kernels import available_convs

    return next(c for c in available_convs() if c not in ("auto", CONV))


def test_training_command_prefers_the_recorded_command_line():
    cfg = _config(lr=1e-3).to_dict()
    start = ["experiments/ddpm.py", "--hidden", "8,8", "--lr", "1e-3", "--epochs", "2"]
    start += ["--workdir", "/abs/results/r", "--data-dir", "/abs/mnist", "--no-progress"]
    later = ["/abs/experiments/ddpm.py", "--hidden", "8,8", "--lr", "1e-3", "--epochs", "4"]
    later += ["--export-epochs", "2,4", "--workdir=/abs/results/r", "--warm-start"]
    later += ["/abs/results/r/exports/epoch_002", "--resume"]
    # the latest command line, without the process's own flags, run folder as given
    assert configs.training_command(cfg, "results/r", [start, later]) == (
        "python experiments/ddpm.py --hidden 8,8 --lr 1e-3 --epochs 4 --export-epochs 2,4 "
        "--workdir results/r"
    )
    # recorded where 'auto' resolved to another convolution: pinned to the recorded one
    other = _other_conv()
    pinned = Config.from_dict(cfg | {"model": {**cfg["model"], "conv_impl": other}}).to_dict()
    assert configs.training_command(pinned, "results/r", [later]) == (
        "python experiments/ddpm.py --hidden 8,8 --lr 1e-3 --epochs 4 --export-epochs 2,4 "
        f"--conv-impl {other} --workdir results/r"
    )
    # no usable command line: the flags that differ from the driver's defaults
    derived = "python experiments/ddpm.py --hidden 8,8 --lr 0.001 --epochs 4 --workdir results/r"
    assert configs.training_command(cfg, "results/r") == derived
    assert configs.training_command(cfg, "results/r", [["experiments/cold.py"]]) == derived
    assert configs.training_command(cfg, "results/r", ["not a list"]) == derived
    bad = [["experiments/ddpm.py", "--no-such-flag"]]
    assert configs.training_command(cfg, "results/r", bad) == derived


def test_training_command_for_a_cold_cnn_names_its_network():
    # cold.py's default network is the UNet: a cold CNN run needs --model cnn
    cold = Config(
        model=ModelConfig(hidden=(8, 8), conv_impl=CONV),
        process=ProcessConfig(kind="cold", T=50, degradation="blur", loss="l2", noise=0.3),
        train=TrainConfig(epochs=2, lr=1e-3, batch_size=64, ema_decay=0.999, grad_clip=1.0),
    ).to_dict()
    cmd = configs.training_command(cold, "results/c")
    assert cmd.startswith("python experiments/cold.py --model cnn --degradation blur --hidden 8,8")
    # --noise-schedule constant moves --sample-noise's default (1.25 x --noise): pinned too
    assert "--noise-schedule constant" in cmd and "--sample-noise 0.0" in cmd
    assert configs.parse_command(cmd.split()[2:-2], "cold") == Config.from_dict(cold).to_dict()
    opts = Config.from_dict(cold).to_dict()
    opts["process"]["degradation_options"] = [["sigma_max", 4.0]]
    assert "--degradation-option sigma_max=4.0" in configs.training_command(opts, "results/c")


def test_number_formatting():
    assert values.fmt(None) == "–" and values.fmt(float("nan")) == "–"
    assert values.fmt(1.25, 1) == "1.2" and values.fmt(3, 2) == "3.00"
    m = {"fd": 12.345, "fd_ci": [11.0, 13.55], "kid": 0.5}
    assert values.ci_text(m, "fd", 1) == "12.3 [11.0, 13.6]"
    assert values.ci_text(m, "kid", 2) == "0.50"  # no interval recorded
    assert values.ci_text(m, "recall", 3) == "–"
    assert values.pct(0.25) == 25.0 and values.pct(None) is None
    assert values.div(3, 2) == 1.5 and values.div(1, 0) is None and values.div(None, 2) is None
    assert values.slug("melt 24k / v-pred") == "melt_24k_v_pred"
    out = values.Values()
    for key, value in (("b", True), ("f", 2.345), ("n", None), ("i", 7), ("t", "x")):
        out.put(key, value)
    out.put("d", 2.345, d=2)
    out.put("own", 0.5, "half")
    texts = {k: v["s"] for k, v in out.numbers.items()}
    assert texts == {
        "b": "yes", "f": "2.3", "n": "–", "i": "7", "t": "x", "d": "2.35", "own": "half"
    }  # fmt: skip
    assert out.numbers["f"]["v"] == 2.345


def test_sampler_text_and_fidelity_row():
    def ev(tag, sampler, steps, **m):
        return study.EvalRecord(tag, Path("."), _metrics(50.0, (45.0, 55.0)) | m, 4, sampler, steps)

    assert values.sampler_text(ev("ep004_cold2", "cold2", 50)) == "cold Alg. 2, 50 steps"
    assert values.sampler_text(ev("x", "dpmpp-clip-data", 20)) == (
        "DPM-Solver++ (x0 clipped to data) 20"
    )
    assert values.sampler_text(ev("starter_ep50", None, None)) == "starter sampler (1000 steps)"
    assert values.sampler_text(ev("mine", None, None)) == "given samples"
    e = ev("ep004_ancestral1000", "ancestral", 1000, sample_seconds=30.0)
    assert values.sec_per_1k(e) == pytest.approx(30.0)
    row = values.fidelity_row("run", e)
    assert row[:5] == ["run", "4", "ancestral 1000", "1000", "50.0 [45.0, 55.0]"]
    assert row[5] == "1.00 [0.50, 1.50]"
    assert row[-1] == "25.0" and len(row) == len(sections.FIDELITY_HEADER)


@pytest.mark.parametrize(
    ("src", "words"),
    [
        ("plain words here", 3),
        ("escaped \\#hash and a\\;b", 4),  # '\\#hash' is text; 'a\\;b' one word
        ("#for x in range(3) [loop body words]", 3),
        ("#if a [one] else if b [two] else [three]", 3),  # every branch: an upper bound
        ("label <fig:x> and @fig:x.", 3),  # a label is no word, a reference one
        ("#let f(x) = [not\n prose]\nafter", 1),  # a definition ends at its line's end
        ('#f("a]b")[inside words]', 2),  # a bracket in a string closes nothing
        ("math $a \\$ b$ gone", 2),
        ("#figure([a #strong[b] c], caption: [d])", 4),
        ("// all comment\n/* and\nthis */ kept", 1),
        ("- list item\n+ numbered\n= Heading", 4),
        ("`raw` and ```\nblock\n``` text", 2),
        ("url https://example.org stays", 3),  # '//' after ':' is no comment
    ],
)
def test_count_words_cases(src, words):
    assert typeset.count_words(src) == words


def test_figures_draw_without_pyplot_or_a_backend_switch(tmp_path):
    # the report draws with matplotlib's object API: no pyplot, no matplotlib.use
    run = _write_run(tmp_path / "results", "q1_default", _config(), 2, 60.0)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import matplotlib\n"
        "def use(*args, **kwargs): raise AssertionError('backend switched')\n"
        "matplotlib.use = use\n"
        "from pathlib import Path; import figures, study, values\n"
        "r = study.read_run_record(Path(sys.argv[2]), study.KNOWN_RUNS[0], [])\n"
        "s = study.Study(r.path.parent, {'q1_default': r}, {}, [], None, [])\n"
        "names = figures.draw_figures(s, values.Values(), Path(sys.argv[3]))\n"
        "assert names == ['loss.png'], names\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    cmd = [sys.executable, "-c", code, str(REPO / "report"), str(run), str(tmp_path)]
    subprocess.run(cmd, check=True)
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_intervals_overlap_counts_a_shared_endpoint_and_not_a_gap():
    assert values.intervals_overlap((1.0, 2.0), (2.0, 3.0))  # touching ends share a point
    assert values.intervals_overlap((1.0, 5.0), (2.0, 3.0))  # one inside the other
    assert not values.intervals_overlap((1.0, 2.0), (2.1, 3.0))
    assert not values.intervals_overlap((2.1, 3.0), (1.0, 2.0))
