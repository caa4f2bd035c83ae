"""Tests for jaxdiff.recipes: each recipe is the committed run's config; overrides; warm-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxdiff import recipes
from jaxdiff.config import Config

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize(
    ("run", "make"),
    [
        ("q1_default", lambda: recipes.starter(epochs=50)),
        ("q1_alt", recipes.starter_alt),
        ("q2_melt", recipes.melt),
        ("q2_gaussian", recipes.gaussian_unet),
    ],
)
def test_each_recipe_is_the_config_its_study_run_trained_with(run, make):
    saved = Config.from_dict(json.loads((RESULTS / run / "config.json").read_text())["config"])
    # the convolution path and GroupNorm dtype are numerics choices recorded per run
    paths = {"conv_impl": saved.model.conv_impl, "norm_fp32": saved.model.norm_fp32}
    assert recipes.override(make(), **paths) == saved


def test_overrides_route_to_their_section_and_unknown_names_fail_clearly():
    cfg = recipes.starter(epochs=1, limit=2048, hidden=[8, 8], T=20)
    assert (cfg.train.epochs, cfg.train.limit, cfg.model.hidden, cfg.process.T) == (
        1,
        2048,
        (8, 8),
        20,
    )
    assert recipes.get("gaussian_unet_tuned").process.prediction == "v"
    with pytest.raises(ValueError, match="no config field 'epoch'; the fields are"):
        recipes.melt(epoch=3)
    with pytest.raises(ValueError, match="unknown recipe 'cold'; choose one of starter"):
        recipes.get("cold")


def test_warmup_scales_to_short_runs_unless_given():
    assert recipes.melt().train.warmup_steps == 500  # 10 epochs of 937 steps
    assert recipes.melt(epochs=1, limit=1024).train.warmup_steps == 1  # 16 steps
    assert recipes.melt(epochs=1, limit=1024, warmup_steps=0).train.warmup_steps == 0
    assert recipes.starter(epochs=1, limit=256).train.warmup_steps == 0
    assert recipes.steps_per_epoch(recipes.starter().train) == 468  # the starter's count


@pytest.mark.parametrize(("kind", "recipe"), [("ddpm", "starter"), ("cold", "melt")])
def test_a_driver_with_no_flags_trains_its_recipe(kind, recipe):
    from jaxdiff.app.cli import common_parser, config_from_args

    parser = common_parser(None, kind)
    cfg = config_from_args(parser.parse_args([]), parser, kind)
    # the driver records what "auto" resolved to on this machine
    assert cfg == recipes.get(recipe, conv_impl=cfg.model.conv_impl)
