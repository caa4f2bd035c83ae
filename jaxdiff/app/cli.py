"""Command-line plumbing shared by the drivers in ``experiments/``: flags -> :class:`Config`.

Drivers stay thin: they build a parser here, turn flags into a config, and call the
library. Errors a user can fix (bad flags, missing data, inconsistent checkpoints, a
diverged run) print one clear line and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxdiff import recipes
from jaxdiff.app.checkpoint import CheckpointError
from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.data import DataError
from jaxdiff.paths import (
    atomic_json,
    atomic_npy,
    check_checkpoint,
    check_readable_dir,
    check_readable_file,
    check_writable_dir,
    check_writable_file,
    load_samples,
)

if TYPE_CHECKING:
    from jaxdiff.fidelity.evaluation import Reference, SampleScores

USER_ERRORS = (DataError, CheckpointError, ValueError)
#: ``--conv-impl`` value of the sampling drivers that keeps the run's recorded implementation.
RECORDED = "recorded"


_SAMPLING_CONV_HELP = (
    "convolution implementation to sample with: auto (default, the fastest here;\n"
    "all are tested equal to XLA's up to float rounding), recorded (the run's own, for\n"
    "bitwise reproduction on the recording host), or a name: xla, fast, fast-onednn,\n"
    "onednn, loopsafe"
)


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Add the sampling flags shared by ``sample.py`` and ``evaluate.py`` (defined once here).

    The ``--sampler`` choices and their help come from the registry
    (:data:`jaxdiff.samplers.SAMPLERS`), so a registered sampler is a choice of both drivers.

    Args:
        parser: The driver's parser.
    """
    from jaxdiff.samplers import SAMPLERS

    g = parser.add_argument_group("sampling")
    g.add_argument("--epoch", type=int, default=None, help="checkpoint epoch (default latest)")
    g.add_argument("--weights", choices=("ema", "raw"), default="ema", help="EMA or raw parameters")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    lines = "\n".join(f"  {s.name} ({s.kind}): {s.summary}" for s in SAMPLERS.values())
    g.add_argument(
        "--sampler",
        choices=tuple(SAMPLERS),
        default=None,
        metavar="NAME",
        help=f"default: the run's own (ancestral for DDPM, cold2 for melt):\n{lines}",
    )
    g.add_argument(
        "--steps", type=int, default=None, help="network evaluations (default: the sampler's)"
    )
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta")
    g.add_argument(
        "--clip-x0",
        nargs="?",
        const="wide",
        default=None,
        choices=("wide", "data"),
        help="ddim/dpmpp: clip predicted clean images, to [-1, 1] (wide, the default) or to "
        "the data range [-0.5, 0.5] (data)",
    )
    g.add_argument(
        "--sample-noise",
        type=float,
        default=None,
        help="cold: step noise of the reverse process (default: the run's own)",
    )
    g.add_argument(
        "--start",
        choices=("fitted", "oracle"),
        default="fitted",
        help="cold: start states from the run's fitted mixture, or D(x, T) of real test\n"
        "digits (the oracle: the best a start sampler could do)",
    )
    g.add_argument(
        "--start-noise",
        type=float,
        default=None,
        help="cold: noise added to each start state (default: the run's training noise)",
    )
    g.add_argument("--conv-impl", default="auto", help=_SAMPLING_CONV_HELP)
    g.add_argument("--data-dir", default=None, help="MNIST folder (cold start-state fit, metrics)")


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 16,32,32,16, got {text!r}"
        ) from None
    if not vals or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"channel counts must be positive integers, got {text!r}")
    return vals


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return v

    return parse


DRIVER_RECIPES = {"ddpm": "starter", "cold": "melt"}
"""The recipe (:mod:`jaxdiff.recipes`) whose config gives each driver its flag defaults."""


def _recipe_defaults(kind: str) -> dict:
    """A driver's flag defaults, read from its recipe's config."""
    cfg = recipes.get(DRIVER_RECIPES[kind])
    t, m = cfg.train, cfg.model
    return {
        "lr": t.lr,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "ema": t.ema_decay,
        "grad_clip": t.grad_clip,
        "lr_schedule": t.lr_schedule,
        "warmup_steps": t.warmup_steps,
        "model": m.name,
        "precision": m.precision,
    }


def _choice(group, flag: str, choices: tuple[str, ...], help: str) -> None:  # noqa: A002
    """Add a flag taking one of ``choices``, the first being the default."""
    group.add_argument(flag, choices=choices, default=choices[0], help=help)


def common_parser(doc: str | None, kind: str) -> argparse.ArgumentParser:
    """Build the training flags shared by ``ddpm.py`` and ``cold.py``.

    Args:
        doc: The driver's docstring (shown in ``--help``).
        kind: ``"ddpm"`` or ``"cold"``; sets process-specific flags and defaults.

    Returns:
        The parser.
    """
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    d = _recipe_defaults(kind)
    _training_flags(p.add_argument_group("training"), d)
    _model_flags(p.add_argument_group("model"), d)
    _process_flags(p.add_argument_group("process"), kind)
    _output_flags(p.add_argument_group("output"))
    return p


def _training_flags(g: argparse._ArgumentGroup, d: dict) -> None:
    """The optimisation flags (defaults: the driver's recipe)."""
    g.add_argument("--lr", type=_positive(float), default=d["lr"], help="Adam learning rate")
    g.add_argument("--epochs", type=_positive(int), default=d["epochs"])
    g.add_argument("--batch-size", type=_positive(int), default=d["batch_size"])
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--ema", type=float, default=d["ema"], help="EMA decay (0: off, the starter)")
    g.add_argument(
        "--grad-clip", type=float, default=d["grad_clip"], help="global-norm clip (0: off)"
    )
    g.add_argument(
        "--lr-schedule",
        choices=("constant", "cosine"),
        default=d["lr_schedule"],
        help="constant (the starter; after --warmup-steps, if any), or warm-up then cosine "
        "decay to 0 at the last epoch",
    )
    g.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help=f"linear warm-up steps (either schedule; default: {d['warmup_steps']}, or a\n"
        "tenth of the run's steps if fewer; config.json records the number used)",
    )
    g.add_argument("--limit", type=int, default=0, help="train on the first N images only")


def _model_flags(m: argparse._ArgumentGroup, d: dict) -> None:
    """The network flags (defaults: the driver's recipe)."""
    m.add_argument("--model", choices=("cnn", "unet"), default=d["model"])
    m.add_argument("--hidden", type=_int_tuple, default=None, help="channels, e.g. 16,32,32,16")
    m.add_argument("--kernel-size", type=_positive(int), default=7)
    m.add_argument("--ln-over-channels", action="store_true", help="LayerNorm over (C,H,W)")
    m.add_argument("--precision", choices=("fp32", "bf16"), default=d["precision"])
    m.add_argument(
        "--conv-impl",
        default="auto",
        help="convolution implementation: auto (the fastest tested path for the backend;\n"
        "config.json records what it resolved to; on CPU onednn where oneDNN has AMX, else\n"
        "fast-onednn, or fast where the oneDNN kernels cannot be built), xla (the reference),\n"
        "fast, fast-onednn, onednn, loopsafe",
    )
    m.add_argument("--attention", action="store_true", help="UNet: attention at 7x7")
    m.add_argument(
        "--norm-fp32",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="UNet under bf16: GroupNorm + SiLU in fp32 (default; same parameters, faster on\n"
        "XLA:CPU); --no-norm-fp32: in bf16, as runs before this flag did",
    )
    m.add_argument(
        "--res-blocks",
        type=_positive(int),
        default=1,
        help="UNet: residual blocks per level on each path (depth)",
    )


def _process_flags(q: argparse._ArgumentGroup, kind: str) -> None:
    """The forward process's flags: DDPM's schedule and target, or cold's degradation."""
    q.add_argument("--T", type=_positive(int), default=1000 if kind == "ddpm" else None)
    if kind == "ddpm":
        q.add_argument("--schedule", choices=("linear", "cosine", "sigmoid"), default="linear")
        q.add_argument("--beta1", type=float, default=1e-4)
        q.add_argument("--beta2", type=float, default=0.02)
        _choice(q, "--prediction", ("eps", "v"), "the network's target: eps (the starter) or v")
        _choice(q, "--weighting", ("none", "min_snr"), "loss weighting over t (min_snr: Min-SNR-5)")
    else:
        from jaxdiff.degradations import DEFAULT_DEGRADATION

        q.add_argument(
            "--degradation",
            default=DEFAULT_DEGRADATION,
            help="a registered degradation's name, or your own factory as\n"
            "package.module:factory (see docs/degradations.md)",
        )
        q.add_argument(
            "--degradation-option",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="an option of the degradation's factory (repeat for more), e.g.\n"
            "--degradation blur --degradation-option sigma_max=4",
        )
        q.add_argument("--loss", choices=("l1", "l2"), default="l2")
        q.add_argument(
            "--noise",
            type=float,
            default=0.3,
            help="training noise: std of Gaussian noise added to each degraded input\n"
            "(0: Bansal et al.'s deterministic setting)",
        )
        _choice(
            q,
            "--noise-schedule",
            ("linear", "constant"),
            "training noise growing linearly to --noise at t = T, or constant in t (IHDM)",
        )
        q.add_argument(
            "--sample-noise",
            type=float,
            default=None,
            help="step noise of the reverse process, on the same schedule\n"
            "(default: 1.25 x --noise for constant, as IHDM; 0 for linear, where Alg. 2\n"
            "carries the rescaled residual instead)",
        )


def _output_flags(o: argparse._ArgumentGroup) -> None:
    """Where a run writes, resuming, and what it draws and keeps each epoch."""
    o.add_argument("--workdir", type=Path, default=None, help="run folder (default runs/<name>)")
    o.add_argument("--data-dir", default=None, help="MNIST folder (else $JAXDIFF_DATA_DIR)")
    o.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    o.add_argument(
        "--warm-start",
        type=Path,
        default=None,
        metavar="EXPORT",
        help="continue a run whose checkpoints are gone from one of its exports,\n"
        "e.g. <workdir>/exports/epoch_024 (fresh Adam moments; keys and lr continue)",
    )
    o.add_argument("--grid-n", type=int, default=16, help="samples per epoch grid (0: none)")
    o.add_argument("--grid-every", type=_positive(int), default=1)
    o.add_argument("--keep-checkpoints", type=_positive(int), default=3, help="checkpoints kept")
    o.add_argument(
        "--export-epochs",
        type=_int_tuple,
        default=(),
        help="also export the parameters after these epochs, e.g. 1,2,5,10,24,50\n"
        "(to <workdir>/exports/epoch_NNN, small enough to commit)",
    )
    o.add_argument("--chunk-steps", type=_positive(int), default=39, help="steps per jit call")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def _option_value(text: str) -> Any:
    """A flag's option value: an int, a float, true/false, else the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _degradation_options(
    parser: argparse.ArgumentParser,
    name: str,
    T: int,
    pairs: list[str],  # noqa: N803
) -> tuple[tuple[str, Any], ...]:
    """Parse ``--degradation-option NAME=VALUE`` flags and check them with the factory."""
    from jaxdiff.degradations import check, get_degradation, is_plugin

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--degradation-option takes NAME=VALUE, got {pair!r}")
        options[key.strip()] = _option_value(value.strip())
    try:
        degrade = get_degradation(name, T, **options)
        if is_plugin(name):  # a user's own: its contract is checked before any training
            check(degrade)
    except (ValueError, TypeError) as err:
        parser.error(f"--degradation {name}: {err}")
    return tuple(sorted(options.items()))


def _check_training_flags(
    args: argparse.Namespace, parser: argparse.ArgumentParser, kind: str
) -> None:
    """Reject inconsistent training and network flags; fill in a scaled ``--warmup-steps``."""
    if not 0.0 <= args.ema < 1.0:
        parser.error(f"--ema must be in [0, 1), got {args.ema}")
    if args.limit < 0:
        parser.error(f"--limit must be >= 0, got {args.limit}")
    if args.limit and args.limit < args.batch_size:
        parser.error(
            f"--limit {args.limit} is smaller than one batch (--batch-size {args.batch_size})"
        )
    if args.warmup_steps is None:  # scaled to short runs (a quick try must not fail on it)
        train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, limit=args.limit)
        args.warmup_steps = recipes.scaled_warmup(train, _recipe_defaults(kind)["warmup_steps"])
    if args.warmup_steps < 0:
        parser.error(f"--warmup-steps must be >= 0, got {args.warmup_steps}")
    if args.kernel_size % 2 == 0:
        parser.error(f"--kernel-size must be odd (same padding), got {args.kernel_size}")
    if args.model == "cnn" and (args.attention or args.res_blocks != 1 or not args.norm_fp32):
        parser.error(
            "--attention, --res-blocks and --no-norm-fp32 shape the UNet; add --model unet"
        )


def _model_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ModelConfig:
    """The network's config; checks ``--conv-impl`` and builds its native kernels now."""
    from jaxdiff.kernels import available_convs, prepare, resolve_conv_impl

    if args.conv_impl not in available_convs():
        parser.error(f"--conv-impl {args.conv_impl!r} unknown; choose from {available_convs()}")
    prepare(args.conv_impl)  # builds the native kernels now, announced, where they may run
    return ModelConfig(
        name=args.model,
        hidden=args.hidden or ((16, 32, 32, 16) if args.model == "cnn" else (32, 64, 64)),
        kernel_size=args.kernel_size,
        ln_over_channels=args.ln_over_channels,
        precision=args.precision,
        conv_impl=resolve_conv_impl(args.conv_impl),
        attention=args.attention,
        res_blocks=args.res_blocks,
        norm_fp32=args.norm_fp32,
    )


def _process_config(
    args: argparse.Namespace, parser: argparse.ArgumentParser, kind: str
) -> ProcessConfig:
    """The forward process's config: DDPM's schedule, or cold's degradation and noise."""
    if kind == "ddpm":
        if not 0.0 < args.beta1 < args.beta2 < 1.0:
            parser.error(f"need 0 < --beta1 < --beta2 < 1, got {args.beta1}, {args.beta2}")
        flags = ("T", "schedule", "beta1", "beta2", "prediction", "weighting")
        return ProcessConfig(kind="ddpm", **{f: getattr(args, f) for f in flags})
    from jaxdiff.degradations import default_T

    try:
        T = args.T or default_T(args.degradation)  # noqa: N806
    except ValueError as err:
        parser.error(f"--degradation: {err}")
    options = _degradation_options(parser, args.degradation, T, args.degradation_option)
    if args.noise < 0 or (args.sample_noise is not None and args.sample_noise < 0):
        parser.error("--noise and --sample-noise must be >= 0")
    factor = 1.25 if args.noise_schedule == "constant" else 0.0
    sample_noise = factor * args.noise if args.sample_noise is None else args.sample_noise
    return ProcessConfig(
        kind="cold",
        T=T,
        degradation=args.degradation,
        degradation_options=options,
        loss=args.loss,
        noise=args.noise,
        noise_schedule=args.noise_schedule,
        sample_noise=sample_noise,
    )


def config_from_args(
    args: argparse.Namespace, parser: argparse.ArgumentParser, kind: str
) -> Config:
    """Turn parsed flags into a :class:`Config`, rejecting inconsistent ones via ``parser``.

    Also fills in the flags whose defaults depend on others: ``args.warmup_steps`` (scaled
    to short runs) and ``args.workdir`` (``runs/<name>``).

    Args:
        args: Parsed flags.
        parser: The parser (its ``error`` prints usage and exits 2).
        kind: ``"ddpm"`` or ``"cold"``.

    Returns:
        The run config.
    """
    _check_training_flags(args, parser, kind)
    model = _model_config(args, parser)
    process = _process_config(args, parser, kind)
    flags = ("lr", "batch_size", "epochs", "seed", "limit", "grad_clip", "lr_schedule")
    train = TrainConfig(
        ema_decay=args.ema, warmup_steps=args.warmup_steps, **{f: getattr(args, f) for f in flags}
    )
    if args.workdir is None:
        name = kind if kind == "ddpm" else f"cold_{process.degradation.replace(':', '.')}"
        args.workdir = Path("runs") / name
    return Config(model=model, process=process, train=train)


MNIST_FILES = "the four MNIST IDX .gz files"


def check_paths(
    workdir: Path | None = None,
    data_dir: str | Path | None = None,
    checkpoint: Path | None = None,
    out_dir: Path | None = None,
    out_file: Path | None = None,
) -> None:
    """Check a driver's paths before any work (see :mod:`jaxdiff.paths`).

    Args:
        workdir: ``--workdir``: must be creatable and writable.
        data_dir: ``--data-dir``: when given, an existing readable folder.
        checkpoint: ``--checkpoint``: a run or an exported params folder.
        out_dir: ``--out`` naming a folder: creatable and writable.
        out_file: ``--out`` naming a file: its folder creatable and writable.

    Raises:
        jaxdiff.paths.PathError: One line naming the flag, the path, the problem and the fix.
    """
    if workdir is not None:
        check_writable_dir(workdir, "--workdir")
    if data_dir is not None:
        check_readable_dir(data_dir, "--data-dir", MNIST_FILES)
    if checkpoint is not None:
        check_checkpoint(checkpoint)
    if out_dir is not None:
        check_writable_dir(out_dir, "--out")
    if out_file is not None:
        check_writable_file(out_file, "--out")


def fail(msg: str) -> int:
    """Print a one-line error to stderr and return exit status 2."""
    print(f"error: {msg}", file=sys.stderr)
    return 2


def tune_process() -> None:
    """The drivers' process-wide settings, applied once before training or sampling.

    glibc's allocator keeps freed memory (:func:`jaxdiff.app.allocator.configure_cpu_allocator`,
    ~1.5x faster CPU steps) and XLA's persistent compilation cache is switched on
    (:func:`jaxdiff.app.compile_cache.enable_compilation_cache`). Only the command-line
    drivers call this; the library (``fit``, ``generate``) changes nothing process-wide, so a
    notebook opts in by calling it.
    """
    from jaxdiff.app.allocator import configure_cpu_allocator
    from jaxdiff.app.compile_cache import enable_compilation_cache

    configure_cpu_allocator()
    enable_compilation_cache()


def run_training(cfg: Config, args: argparse.Namespace, start_fn_factory=None) -> int:
    """Run :func:`jaxdiff.app.runner.fit` from parsed flags, turning user errors into messages.

    Args:
        cfg: The run config.
        args: Parsed flags (workdir, data dir, resume, output options).
        start_fn_factory: Cold runs: builds the start-state sampler for epoch grids.

    Returns:
        Process exit status (0 on success, 2 on a user error).
    """
    from jaxdiff.app.parallel import maybe_initialize_distributed
    from jaxdiff.app.runner import TrainingDiverged, fit

    tune_process()
    try:
        check_paths(workdir=args.workdir, data_dir=args.data_dir)
        maybe_initialize_distributed()
        _, records = fit(
            cfg,
            args.workdir,
            data_dir=args.data_dir,
            resume=args.resume,
            chunk_steps=args.chunk_steps,
            grid_n=args.grid_n,
            grid_every=args.grid_every,
            keep_checkpoints=args.keep_checkpoints,
            progress=not args.no_progress,
            start_fn_factory=start_fn_factory,
            export_epochs=tuple(args.export_epochs),
            warm_start=args.warm_start,
            argv=[Path(sys.argv[0]).as_posix(), *sys.argv[1:]],
        )
    except (*USER_ERRORS, TrainingDiverged) as err:
        return fail(str(err))
    if records:
        last = records[-1]
        print(
            json.dumps({"workdir": str(args.workdir), "epoch": last["epoch"], "loss": last["loss"]})
        )
    return 0


def _start_fn(cfg, pieces, data_dir, images, kind: str, noise_std: float | None):
    """A cold run's start-state sampler: ``"fitted"`` (the run's mixture) or ``"oracle"``."""
    from jaxdiff.data import load_mnist
    from jaxdiff.start_states import start_fn_for

    if images is None:
        images, _ = load_mnist("train", data_dir)
    if kind == "fitted":
        return start_fn_for(cfg, pieces, images=images, noise_std=noise_std)
    if kind == "oracle":
        import jax

        from jaxdiff.app.cold_analysis import start_variants

        test, _ = load_mnist("test", data_dir)
        variants = start_variants(cfg, pieces, images, test, jax.random.key(0), noise_std=noise_std)
        return variants["oracle"]
    raise ValueError(f"--start {kind!r} unknown; use fitted or oracle.")


def _start_flags(args: argparse.Namespace) -> tuple[str, float | None]:
    """``--start`` and ``--start-noise`` (``"fitted"`` and ``None`` when absent)."""
    return getattr(args, "start", None) or "fitted", getattr(args, "start_noise", None)


def _cold_start(args: argparse.Namespace, cfg: Config, pieces, images, sampler: str):
    """The start-state sampler a cold run draws from (``None`` for DDPM, where none applies)."""
    start_kind, start_noise = _start_flags(args)
    if cfg.process.kind == "cold":
        return _start_fn(cfg, pieces, args.data_dir, images, start_kind, start_noise)
    if start_kind != "fitted" or start_noise is not None or sampler == "start":
        raise ValueError("--start, --start-noise and --sampler start apply to cold runs only.")
    return None


def _draw_info(
    args: argparse.Namespace,
    cfg: Config,
    meta: dict,
    sampler: str,
    seconds: float,
    *,
    weights: str,
    clip_x0: str | bool,
) -> dict:
    """The JSON-ready record of a draw by :func:`draw_samples` (its flags as resolved)."""
    from jaxdiff.samplers import SAMPLERS

    cold = cfg.process.kind == "cold"
    noise = getattr(args, "sample_noise", None)
    start_kind, start_noise = _start_flags(args)
    return {
        "checkpoint": str(args.checkpoint),
        "epoch": meta.get("epoch"),
        "process": cfg.process.kind,
        "sampler": sampler,
        "steps": args.steps or SAMPLERS[sampler].default_steps(cfg),
        "eta": args.eta if sampler == "ddim" else None,
        "clip_x0": clip_x0 if SAMPLERS[sampler].clips else None,
        "noise": (cfg.process.sample_noise if noise is None else noise) if cold else None,
        "sample_seconds": seconds,
        "seed": args.seed,
        "start": start_kind if cold else None,
        "start_noise": start_noise,
        "weights": meta.get("weights", weights),  # an export folder says which it holds
        "conv_impl": cfg.model.conv_impl,
    }


def draw_samples(args: argparse.Namespace, images=None, batch: int = 250) -> tuple[object, dict]:
    """Load a checkpoint named by ``args`` and draw ``args.n`` samples, timing the draw.

    Args:
        args: Flags with ``checkpoint``, ``epoch``, ``n``, ``seed``, ``sampler``, ``steps``,
            ``eta``, ``data_dir`` and optionally ``weights`` (``"ema"`` or ``"raw"``),
            ``clip_x0`` (DDIM only) and ``conv_impl`` (``"recorded"``, the run's own, when
            absent).
        images: Training images for a cold run's start-state fit (read when ``None``).
        batch: Samples per jitted sampler call.

    Returns:
        ``(samples, info)``: ``float32`` samples ``(n, 28, 28, 1)`` and a JSON-ready dict
        (checkpoint, epoch, process, sampler, steps, eta, seed, and ``sample_seconds``, the
        wall time of the draw including compilation).
    """
    import time

    import jax

    from jaxdiff.app.runner import load_run
    from jaxdiff.kernels import prepare
    from jaxdiff.pipeline import generate
    from jaxdiff.samplers import default_sampler

    clip_x0 = getattr(args, "clip_x0", None) or False
    conv_impl = getattr(args, "conv_impl", RECORDED)
    conv_impl = None if conv_impl == RECORDED else conv_impl
    tune_process()
    prepare(conv_impl)  # the native kernels, built now where they may run (not mid-trace)
    weights = getattr(args, "weights", "ema")
    cfg, pieces, params, meta = load_run(args.checkpoint, args.epoch, weights, conv_impl)
    sampler = args.sampler or default_sampler(cfg)
    start = _cold_start(args, cfg, pieces, images, sampler)
    t0 = time.perf_counter()
    x = generate(
        cfg,
        pieces,
        params,
        jax.random.key(args.seed),
        args.n,
        sampler,
        steps=args.steps,
        eta=args.eta,
        start=start,
        batch=batch,
        clip_x0=clip_x0,
        noise=getattr(args, "sample_noise", None),
    )
    seconds = round(time.perf_counter() - t0, 2)
    return x, _draw_info(args, cfg, meta, sampler, seconds, weights=weights, clip_x0=clip_x0)


def sample_command(args: argparse.Namespace) -> int:
    """Sample from a checkpoint and write ``<out>.png`` and ``<out>.npy``.

    Args:
        args: Parsed ``sample.py`` flags.

    Returns:
        Process exit status.
    """
    from jaxdiff.app import plotting

    if args.n <= 0:
        return fail(f"--n must be positive, got {args.n}")
    out = args.out or Path(args.checkpoint) / f"samples_seed{args.seed}"
    try:
        check_paths(data_dir=args.data_dir, checkpoint=args.checkpoint)
        check_writable_file(out.with_suffix(".npy"), "--out")
        x, info = draw_samples(args)
    except USER_ERRORS as err:
        return fail(str(err))
    sampler, secs = info["sampler"], info["sample_seconds"]
    atomic_npy(out.with_suffix(".npy"), x)
    plotting.save_grid(x, out.with_suffix(".png"), title=f"{sampler}, epoch {info['epoch']}")
    print(
        json.dumps(
            {
                "n": args.n,
                "sampler": sampler,
                "seconds": round(secs, 2),
                "png": str(out.with_suffix(".png")),
                "npy": str(out.with_suffix(".npy")),
            }
        )
    )
    return 0


def cold_figures_command(args: argparse.Namespace) -> int:
    """Draw a finished cold run's figures (strip, trajectory, restoration) into its workdir.

    Args:
        args: Parsed ``cold.py`` flags (``workdir``, ``data_dir``).

    Returns:
        Process exit status.
    """
    from jaxdiff.app.cold_analysis import cold_figures
    from jaxdiff.app.runner import load_run
    from jaxdiff.data import load_mnist
    from jaxdiff.start_states import start_fn_for

    try:
        check_paths(workdir=args.workdir, data_dir=args.data_dir)
        cfg, pieces, params, _ = load_run(args.workdir)
        images, _ = load_mnist("train", args.data_dir)
        start = start_fn_for(cfg, pieces, images=images)
        cold_figures(cfg, pieces, params, images, args.workdir, start)
    except USER_ERRORS as err:
        return fail(str(err))
    return 0


def export_command(args: argparse.Namespace) -> int:
    """Export one checkpoint's parameters as a small standalone folder (for committing).

    Args:
        args: Parsed ``export.py`` flags (``checkpoint``, ``epoch``, ``weights``, ``out``).

    Returns:
        Process exit status.
    """
    from jaxdiff.app import checkpoint as ckpt
    from jaxdiff.app.runner import load_run

    try:
        check_paths(checkpoint=args.checkpoint, out_dir=args.out)
        cfg, _, params, meta = load_run(args.checkpoint, args.epoch, args.weights)
        weights = meta.get("weights", args.weights)  # an export folder says which it holds
        extra = {"epoch": meta.get("epoch"), "step": meta.get("step"), "weights": weights}
        ckpt.export_params(args.out, cfg, params, extra)
    except USER_ERRORS as err:
        return fail(str(err))
    size = (Path(args.out) / "params.msgpack").stat().st_size
    print(json.dumps({"out": str(args.out), "epoch": extra["epoch"], "bytes": size}))
    return 0


def _evaluation_inputs(args: argparse.Namespace) -> tuple[Any, dict, Any, Any]:
    """The samples to score (read from ``--samples`` or drawn) and MNIST's train and test sets.

    ``--samples`` is read (and checked) before anything is computed.
    """
    from jaxdiff.data import load_mnist

    x, info = None, {}
    if args.samples is not None:
        x = load_samples(args.samples, args.n)
        info = {"samples": str(args.samples)}
    train, _ = load_mnist("train", args.data_dir)
    test, _ = load_mnist("test", args.data_dir)
    if args.checkpoint is not None:
        x, info = draw_samples(args, images=train, batch=args.batch)
    return x, info, train, test


def _per_class_grid(images: Any, per_class: list) -> Any:
    """Rows 0-9 of the samples predicted as each digit, padded with black to one width."""
    import numpy as np

    rows = [images[idx] if len(idx) else np.zeros((0, 28, 28, 1), np.float32) for idx in per_class]
    width = max(1, max(len(r) for r in rows))
    grid = np.full((10, width, 28, 28, 1), -0.5, np.float32)
    for c, r in enumerate(rows):
        grid[c, : len(r)] = r
    return grid


def _write_galleries(
    out: Path, scores: SampleScores, ranks: dict, ref: Reference, class_hist: list[float]
) -> None:
    """Write the evaluation's galleries and class histogram into ``out``."""
    import numpy as np

    from jaxdiff.app import plotting

    xs = scores.images
    plotting.save_grid(xs[ranks["confident"]], out / "confident.png", title="most confident")
    plotting.save_grid(xs[ranks["unconfident"]], out / "unconfident.png", title="least confident")
    pairs = np.stack([xs[ranks["nn_closest"]], ref.train_images[ranks["nn_closest_train"]]], 1)
    plotting.save_strip(
        pairs[:8].swapaxes(0, 1), out / "nn_closest.png", title="closest to training (top: sample)"
    )
    plotting.save_grid(
        xs[ranks["nn_farthest"]], out / "nn_farthest.png", title="farthest from training"
    )
    grid = _per_class_grid(xs, ranks["per_class"])
    plotting.save_strip(grid, out / "per_class.png", title="per predicted class (rows 0-9)")
    plotting.plot_bars(
        np.asarray(class_hist),
        [str(i) for i in range(10)],
        out / "class_hist.png",
        "class histogram of samples",
    )


def evaluate_command(args: argparse.Namespace) -> int:
    """Sample from a checkpoint (or read samples), score them, write metrics and galleries.

    Writes into ``args.out``: ``metrics.json`` (FD and KID with bootstrap CIs, precision,
    recall, class balance, confidence, nearest-neighbour distances, the real-data floor, the
    sample count, sampler, the feature network ``features`` (``args.features``, default
    ``"lenet"``) with its ``features_sha256``, and seconds), ``samples.npy`` and the galleries
    ``confident.png``, ``unconfident.png``, ``nn_closest.png`` (each sample beside its nearest
    training image), ``nn_farthest.png``, ``per_class.png`` and ``class_hist.png``.

    Args:
        args: Parsed ``evaluate.py`` flags.

    Returns:
        Process exit status.
    """
    import time

    import jax

    from jaxdiff.data import normalize
    from jaxdiff.fidelity.classifier import DEFAULT_FEATURES, default_classifier
    from jaxdiff.fidelity.evaluation import (
        evaluate_samples,
        prepare_reference,
        rank_samples,
        score_samples,
    )

    if args.n <= 1:
        return fail(f"--n must be at least 2, got {args.n}")
    if (args.checkpoint is None) == (args.samples is None):
        return fail("give exactly one of --checkpoint DIR or --samples FILE.npy")
    out = Path(args.out)
    try:
        check_paths(data_dir=args.data_dir, checkpoint=args.checkpoint, out_dir=out)
        clf = default_classifier(getattr(args, "features", DEFAULT_FEATURES))  # sha256 checked
        x, info, train, test = _evaluation_inputs(args)
        t1 = time.perf_counter()
        key = jax.random.key(args.eval_seed)
        ref = prepare_reference(normalize(train), normalize(test), key, n=args.n, classifier=clf)
        scores = score_samples(x, ref)
        result = evaluate_samples(
            x, None, None, jax.random.key(args.eval_seed + 1), reference=ref, scores=scores
        )
        ranks = rank_samples(scores)
    except USER_ERRORS as err:
        return fail(str(err))
    result.update(
        info, n=args.n, eval_seed=args.eval_seed, eval_seconds=round(time.perf_counter() - t1, 2)
    )
    result.update(features=clf.network, features_sha256=clf.card.get("sha256"))
    atomic_npy(out / "samples.npy", x)
    atomic_json(out / "metrics.json", result, default=float)
    _write_galleries(out, scores, ranks, ref, result["class_hist"])
    keys = ("fd", "fd_ci", "kid", "kid_ci", "precision", "recall", "class_kl", "confidence")
    print(json.dumps({k: result.get(k) for k in keys if k in result} | info, default=float))
    return 0


def import_torch_command(args: argparse.Namespace) -> int:
    """Import a PyTorch starter ``state_dict`` as an exported params folder.

    Args:
        args: Flags with ``state_dict`` (a ``.pt`` file) and ``out`` (the folder to write).

    Returns:
        Process exit status (0 on success, 2 on a user error).
    """
    from jaxdiff.app.checkpoint import export_params
    from jaxdiff.app.torch_import import StateDictError, params_from_state_dict, read_state_dict

    try:
        check_readable_file(args.state_dict, "--state-dict", "a PyTorch .pt state_dict file")
        check_writable_dir(args.out, "--out")
        cfg, params = params_from_state_dict(read_state_dict(args.state_dict))
        export_params(
            args.out,
            cfg,
            params,
            {"source": str(args.state_dict), "imported_from": "pytorch state_dict"},
        )
    except (*USER_ERRORS, StateDictError, OSError) as err:
        return fail(str(err))
    print(json.dumps({"out": str(args.out), "model": cfg.model.name, "hidden": cfg.model.hidden}))
    return 0
