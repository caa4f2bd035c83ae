"""What a run's ``config.json`` says, in words and as the command that trains it.

Its model and process in words, its differences from another run, its parameter count, its
machine, and its training command.

:func:`training_command` prefers the command line the run recorded (``config.json``'s
``invocations``, written by :func:`jaxdiff.app.runner.fit`); for runs that predate it, the
command is derived from the config's fields. Either is checked by parsing it back with the
drivers' parser (``jaxdiff.app.cli``): a command is printed only if it gives the config.
"""

from __future__ import annotations

import contextlib
import io
import math
import shlex
from pathlib import Path
from typing import Any

from study import RunRecord

#: Readable names of config settings (for :func:`config_diff`).
SETTING_NAMES = {
    "train.lr": "learning rate",
    "train.batch_size": "batch size",
    "train.ema_decay": "EMA decay",
    "train.seed": "seed",
    "train.limit": "training images",
    "train.grad_clip": "gradient clip",
    "train.lr_schedule": "learning-rate schedule",
    "train.warmup_steps": "warm-up steps",
    "model.name": "network",
    "model.hidden": "channels",
    "model.kernel_size": "kernel size",
    "model.ln_over_channels": "LayerNorm over channels",
    "model.precision": "precision",
    "model.conv_impl": "convolution",
    "model.attention": "attention",
    "model.res_blocks": "residual blocks per level",
    "process.kind": "process",
    "process.schedule": "noise schedule",
    "process.beta1": "beta_1",
    "process.beta2": "beta_T",
    "process.degradation": "degradation",
    "process.prediction": "prediction",
    "process.weighting": "loss weighting",
}

#: The training driver of each process kind.
DRIVERS = {"ddpm": "ddpm.py", "cold": "cold.py"}
#: Config fields whose driver flag is not ``--field-name`` (``kind`` is the driver's choice).
FIELD_FLAGS = {"name": "--model", "ema_decay": "--ema", "kind": None}
#: Flags about one process rather than the recipe (where it runs and how it reports), left
#: out of a recorded command line, with the number of values each takes.
SESSION_FLAGS = {
    "--workdir": 1,
    "--data-dir": 1,
    "--warm-start": 1,
    "--resume": 0,
    "--no-progress": 0,
}


# ----------------------------------------------------------------------------- in words


def model_text(cfg: dict) -> str:
    """The network in words: ``"UNet (32,64,64) +attn bf16"``."""
    m = cfg.get("model", {})
    name = {"cnn": "CNN", "unet": "UNet"}.get(m.get("name"), str(m.get("name", "?")))
    hidden = ",".join(str(h) for h in m.get("hidden", []))
    extra = " +attn" if m.get("attention") else ""
    prec = "" if m.get("precision", "fp32") == "fp32" else f" {m['precision']}"
    return f"{name} ({hidden}){extra}{prec}"


def process_text(cfg: dict) -> str:
    """The forward process in words: ``"DDPM, linear β 0.0001–0.02, T=1000"``."""
    p = cfg.get("process", {})
    if p.get("kind") == "ddpm":
        return f"DDPM, {p.get('schedule')} β {p.get('beta1')}–{p.get('beta2')}, T={p.get('T')}"
    if p.get("kind") == "cold":
        return f"cold, {p.get('degradation')}, T={p.get('T')}, {p.get('loss', '').upper()}"
    return "?"


def machine_text(run: RunRecord) -> str:
    """Where a run trained, as prose: ``"AMD EPYC, 2 cores, jax 0.10.2 (cpu)"``."""
    m = run.machine
    if isinstance(m, dict):
        parts = [str(m.get("cpu", "")), f"{m['cores']} cores" if m.get("cores") else ""]
        jax_ = f"jax {m['jax']}" + (f" ({m['backend']})" if m.get("backend") else "")
        return ", ".join(x for x in (*parts, jax_ if m.get("jax") else "") if x) or "–"
    if m:
        return str(m)
    return ", ".join(str(d) for d in run.devices) or "–"


def param_count(config: dict) -> int | None:
    """The number of parameters a config's model has (``None`` where it cannot be built).

    Args:
        config: A run config dict (``config.json["config"]``).

    Returns:
        The count, from shapes only (nothing is computed).
    """
    try:
        import jax

        from jaxdiff.config import Config
        from jaxdiff.pipeline import build, init_params

        pieces = build(Config.from_dict(config))
        shapes = jax.eval_shape(lambda: init_params(pieces, jax.random.PRNGKey(0)))
        return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))
    except Exception:  # noqa: BLE001 - a config from another version: no count, no crash
        return None


def setting_text(v: Any) -> str:
    """A config setting's value as text (sequences comma-joined, empty as ``"–"``)."""
    if isinstance(v, list | tuple):
        return ",".join(map(str, v))
    return "–" if v in (None, "") else str(v)


def with_defaults(cfg: dict) -> dict:
    """``cfg`` with the settings it predates filled in from :class:`jaxdiff.config.Config`.

    A config written before a setting existed ran with its default, so it must not read as
    a change. A dict that is not a whole config is returned as it is.

    Args:
        cfg: A run config dict.

    Returns:
        The completed dict.
    """
    from jaxdiff.config import Config

    try:
        full = Config.from_dict(cfg).to_dict()
    except (TypeError, ValueError, KeyError, AttributeError):
        return cfg
    return {sec: {**full.get(sec, {}), **sub} for sec, sub in cfg.items()} | {
        sec: sub for sec, sub in full.items() if sec not in cfg
    }


def config_diff(
    base: dict, other: dict, ignore: tuple[tuple[str, str], ...] = (("train", "epochs"),)
) -> list[str]:
    """List the settings where ``other`` differs from ``base`` ("learning rate 2e-4 -> 1e-3").

    Args:
        base: A run config dict (``config.json["config"]``).
        other: Another.
        ignore: ``(section, key)`` pairs left out (by default the epoch budget, which the
            reproducibility table shows).

    Returns:
        One ``"section.key a -> b"`` string per differing setting, sorted.
    """
    base, other = with_defaults(base), with_defaults(other)
    out = []
    for sec in sorted(set(base) | set(other)):
        a, b = base.get(sec, {}), other.get(sec, {})
        for k in sorted(set(a) | set(b)):
            if (sec, k) in ignore or a.get(k) == b.get(k):
                continue
            fa, fb = (setting_text(v) for v in (a.get(k), b.get(k)))
            out.append(f"{SETTING_NAMES.get(f'{sec}.{k}', f'{sec}.{k}')} {fa} -> {fb}")
    return out


# ----------------------------------------------------------------------------- commands


def parse_command(argv: list[str], kind: str) -> dict | None:
    """The config a training driver's flags give (``None`` where the drivers reject them).

    Args:
        argv: The flags, without the script.
        kind: ``"ddpm"`` (``ddpm.py``) or ``"cold"`` (``cold.py``).

    Returns:
        The config dict, as :meth:`jaxdiff.config.Config.to_dict` writes it.
    """
    from jaxdiff.app.cli import common_parser, config_from_args

    parser = common_parser(None, kind)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # a rejected flag is no command
            return config_from_args(parser.parse_args(argv), parser, kind).to_dict()
    except (SystemExit, ValueError, KeyError, TypeError, ImportError):
        return None


def _flag_args(key: str, value: Any) -> list[str]:
    """The flags that set one config field to ``value`` (``--field-name`` by default)."""
    if key == "degradation_options":  # one NAME=VALUE flag per option
        return [a for k, v in value for a in ("--degradation-option", f"{k}={v}")]
    flag = FIELD_FLAGS.get(key, "--" + key.replace("_", "-"))
    if flag is None:
        return []
    if isinstance(value, bool):  # store_true, or --x / --no-x
        return [flag] if value else ["--no-" + flag[2:]]
    return [flag, setting_text(value) if isinstance(value, list | tuple) else str(value)]


def _flags_for(want: dict, got: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """Flags for every field where ``want`` differs from ``got``, in the config's order."""
    argv: list[str] = []
    for sec, fields in want.items():
        for key, value in fields.items():
            if key not in skip and value != got.get(sec, {}).get(key):
                argv += _flag_args(key, value)
    return argv


def _completed(argv: list[str], want: dict, kind: str, skip: tuple[str, ...] = ()) -> list | None:
    """``argv`` with the flags appended that make it give ``want`` (``None`` if none do).

    Flags are added for the fields the command gives otherwise, in rounds: a flag may move
    another field's default (``--noise-schedule constant`` moves ``--sample-noise``'s).
    """
    for _ in range(3):
        got = parse_command(argv, kind)
        if got is None:
            return None
        if got == want:
            return argv
        argv = argv + _flags_for(want, got, skip)
    return None


def _derived_argv(want: dict, kind: str) -> list[str] | None:
    """Flags for the fields that differ from the driver's defaults (runs without argv).

    The network (unless the starter's CNN) and a cold run's degradation are always named.
    """
    head = ["--degradation", want["process"]["degradation"]] if kind == "cold" else []
    plain = parse_command(head, kind)  # the driver's defaults
    if plain is None:
        return None
    name = want["model"]["name"]
    if name != "cnn" or plain["model"]["name"] != name:
        head = ["--model", name, *head]
    return _completed(head, want, kind, skip=("name", "degradation"))


def _drop_session_flags(args: list[str]) -> list[str]:
    """``args`` without :data:`SESSION_FLAGS` (as ``--flag value`` or ``--flag=value``)."""
    out, i = [], 0
    while i < len(args):
        name, eq, _ = args[i].partition("=")
        if name in SESSION_FLAGS:
            i += 1 + (0 if eq else SESSION_FLAGS[name])
            continue
        out.append(args[i])
        i += 1
    return out


def _recorded_argv(invocations: list, want: dict, kind: str) -> list[str] | None:
    """The flags of the run's latest recorded command line, checked against its config.

    Flags of the process alone (:data:`SESSION_FLAGS`: ``--resume``, ``--warm-start``,
    ``--workdir``, ``--data-dir``, ``--no-progress``) are left out. Where today's drivers
    read the flags otherwise than the run recorded (e.g. ``--conv-impl auto``, which the
    config records as what it resolved to on that machine), the flags that pin the
    recorded values are appended.
    """
    last = invocations[-1]
    if not isinstance(last, list) or not last or not all(isinstance(a, str) for a in last):
        return None
    if Path(last[0]).name != DRIVERS[kind]:
        return None
    return _completed(_drop_session_flags(last[1:]), want, kind)


def training_command(config: dict, workdir: str, invocations: list | None = None) -> str | None:
    """The command that trains a recorded run: its own command line where it recorded one.

    Args:
        config: A run config dict (``config.json["config"]``).
        workdir: The run folder to put after ``--workdir``.
        invocations: ``config.json["invocations"]`` (the run's command lines, oldest first),
            if any: the latest one is used; otherwise (or where it does not give
            ``config``) the flags that differ from the driver's defaults.

    Returns:
        E.g. ``"python experiments/ddpm.py --lr 0.001 --epochs 20 --workdir results/x"``
        (shell-quoted), or ``None`` if no command of the drivers' flags gives the config.
    """
    from jaxdiff.config import Config

    try:
        want = Config.from_dict(config).to_dict()
    except (ValueError, KeyError, TypeError):
        return None
    kind = want["process"]["kind"]
    if kind not in DRIVERS:
        return None
    argv = _recorded_argv(invocations, want, kind) if invocations else None
    if argv is None:
        argv = _derived_argv(want, kind)
    if argv is None:
        return None
    return shlex.join(["python", f"experiments/{DRIVERS[kind]}", *argv, "--workdir", workdir])
