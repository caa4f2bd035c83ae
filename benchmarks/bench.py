"""jaxdiff vs the PyTorch starter: train-step and sampler throughput, in one run.

Usage::

    python benchmarks/bench.py            # full run (about 5 minutes on 2 cores)
    python benchmarks/bench.py --quick    # fewer steps and rounds
    python benchmarks/bench.py --json results.json

Both sides run the starter model (SPEC section 2: CNN (16, 32, 32, 16), 7x7 convs, batch
128) on the same random ``uint8`` images (throughput does not depend on the pixels):

* train step: loss (Alg. 18.1) + backward + Adam update. jaxdiff runs
  ``jaxdiff.train.make_run_steps`` (``--train-steps`` steps scanned per dispatch); PyTorch
  its usual Python loop over ``loss.backward(); opt.step()``.
* sampler: the ancestral sampler (Alg. 18.2) over ``--sample-steps`` steps, reported as
  images/s per 100 denoising steps. jaxdiff runs ``jaxdiff.sampling.ddpm_sample`` (one
  jitted scan), PyTorch the starter's loop under ``inference_mode``.

Comparisons: jaxdiff fp32 vs PyTorch fp32, and jaxdiff bf16 (bf16 compute, fp32 master
weights and accumulation) vs PyTorch ``autocast(bfloat16)``. Each library runs in its own
child process; the driver times the cases round-robin (each jaxdiff case right next to its
PyTorch peer, after ``--pause`` seconds of idle) over ``--rounds`` rounds and reports the
median of each, so load from other processes affects both sides alike. Each line with a
ratio reads ``ratio = jaxdiff / PyTorch`` (higher is better for jaxdiff), with the range of
the per-round ratios. A last line per quantity puts each library's fastest precision against
the other's ("best against best", e.g. jaxdiff fp32 against PyTorch's autocast).

Fairness settings, both on by default: both processes get the same glibc allocator settings
(``jaxdiff.app.allocator.MALLOC_ENV``; the jaxdiff side applies them itself), and PyTorch runs with
``OMP_WAIT_POLICY=PASSIVE``: on a shared machine its spinning OpenMP threads otherwise lose
3-4x. ``--no-malloc-tuning`` and ``--torch-omp default`` turn them off.

GFLOP/s are nominal: the direct-convolution FLOP count of the model (forward 0.159 GFLOP
per image, a training step 3x that, 0.48), divided by the measured time, whatever
algorithm ran (jaxdiff's Fourier convolution does ~4x fewer FLOPs); the share is against
SPEC section 6's GEMM ceilings (fp32 ~360, bf16 ~1140 GFLOP/s). An XLA 2048^3 GEMM is timed
in the same rounds and printed as the in-run ceiling.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

FWD_GFLOP_PER_IMG = 0.159
TRAIN_GFLOP_PER_IMG = 0.48
CEILING_GFLOPS = {"fp32": 360.0, "bf16": 1140.0}


# ----------------------------------------------------------------------------- jaxdiff side


def make_jax_cases(args, images_u8: np.ndarray) -> dict[str, Callable[[], float]]:
    """Build the jaxdiff timing closures; each returns seconds for one timed call."""
    import jax
    import jax.numpy as jnp

    from jaxdiff.app.allocator import configure_cpu_allocator
    from jaxdiff.config import ModelConfig, TrainConfig
    from jaxdiff.kernels import prepare
    from jaxdiff.losses import ddpm_loss
    from jaxdiff.models import build_model
    from jaxdiff.sampling import ddpm_sample
    from jaxdiff.schedules import linear
    from jaxdiff.train import init_train_state, make_optimizer, make_run_steps, make_train_step

    configure_cpu_allocator()
    prepare(args.impl)  # the native kernels, built before anything is traced (as the drivers)

    b = args.batch
    images = jnp.asarray(images_u8)
    n = images.shape[0]
    cases = {}
    for precision in args.precisions:
        cfg = ModelConfig(precision=precision, conv_impl=args.impl)
        model = build_model(cfg)
        key = jax.random.key(0)
        params = model.init(key, jnp.zeros((1, 28, 28, 1)), jnp.zeros((1,)))
        tx = make_optimizer(TrainConfig())
        step = make_train_step(ddpm_loss(model.apply, linear()), tx)
        run = make_run_steps(step)
        # The train state is donated to each call, so it gets its own copy of the params.
        holder = {"state": init_train_state(jax.tree.map(jnp.copy, params), tx), "i": 0}
        s = args.train_steps

        def train_once(run=run, holder=holder, s=s):
            holder["i"] += 1
            rng = np.random.default_rng(holder["i"])
            idx = jnp.asarray(rng.integers(0, n, (s, b)), jnp.int32)
            t0 = time.perf_counter()
            state, metrics = run(holder["state"], images, idx, jax.random.key(1))
            jax.block_until_ready(metrics["loss"])
            dt = time.perf_counter() - t0
            holder["state"] = state
            if not np.isfinite(np.asarray(metrics["loss"])).all():
                raise RuntimeError("jaxdiff train step produced a non-finite loss")
            return dt

        sched = linear(T=args.sample_steps)

        def sample_once(model=model, params=params, sched=sched):
            t0 = time.perf_counter()
            z, _ = ddpm_sample(model.apply, params, sched, jax.random.key(2), (b, 28, 28, 1))
            jax.block_until_ready(z)
            return time.perf_counter() - t0

        if "train" in args.what:
            cases[f"jaxdiff {precision} train"] = train_once
        if "sample" in args.what:
            cases[f"jaxdiff {precision} sample"] = sample_once
    return cases


# ----------------------------------------------------------------------------- PyTorch side


def make_torch_cases(args, images_u8: np.ndarray) -> dict[str, Callable[[], float]]:
    """Build the PyTorch timing closures (empty if torch is not installed)."""
    try:
        import torch
    except ImportError:
        print("torch not installed (pip install torch==2.13.0): PyTorch side skipped")
        return {}
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_starter import CNN, DDPM

    torch.manual_seed(0)
    b = args.batch
    data = torch.from_numpy(images_u8).float().div(255.0).sub(0.5).unsqueeze(1)  # N,1,28,28
    n = data.shape[0]
    cases = {}
    for precision in args.precisions:
        ddpm = DDPM(CNN(), betas=(1e-4, 0.02), n_T=1000)
        opt = torch.optim.Adam(ddpm.parameters(), lr=2e-4)
        sampler = DDPM(CNN(), betas=(1e-4, 0.02), n_T=args.sample_steps)
        sampler.eval()
        autocast = precision == "bf16"

        def train_once(ddpm=ddpm, opt=opt, autocast=autocast):
            gen = torch.Generator().manual_seed(0)
            batches = [
                data[torch.randint(0, n, (b,), generator=gen)] for _ in range(args.train_steps)
            ]
            t0 = time.perf_counter()
            for x in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                    loss = ddpm(x)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if not torch.isfinite(loss):
                raise RuntimeError("PyTorch train step produced a non-finite loss")
            return time.perf_counter() - t0

        def sample_once(sampler=sampler, autocast=autocast):
            t0 = time.perf_counter()
            with (
                torch.inference_mode(),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
            ):
                sampler.sample(b, (1, 28, 28), "cpu")
            return time.perf_counter() - t0

        if "train" in args.what:
            cases[f"torch {precision} train"] = train_once
        if "sample" in args.what:
            cases[f"torch {precision} sample"] = sample_once
    return cases


# ----------------------------------------------------------------------------- driver


def throughput(name: str, seconds: float, args) -> float:
    """Images/s for training, images/s per 100 denoising steps for sampling."""
    if name.endswith("train"):
        return args.train_steps * args.batch / seconds
    return args.batch / seconds * args.sample_steps / 100.0


def gflops(name: str, ips: float) -> float:
    """Nominal GFLOP/s from a throughput (see the module docstring)."""
    if name.endswith("train"):
        return ips * TRAIN_GFLOP_PER_IMG
    return ips * 100 * FWD_GFLOP_PER_IMG


def best_against_best(cases: dict, whats) -> dict:
    """Each library's fastest precision against the other's, per measured quantity.

    Args:
        cases: ``{"jaxdiff fp32 train": {"images_per_s": ...}, ...}`` as in the results.
        whats: The quantities measured (``"train"``, ``"sample"``).

    Returns:
        ``{what: {"jaxdiff": prec, "jaxdiff_images_per_s": ..., "torch": prec,
        "torch_images_per_s": ..., "ratio": jaxdiff / torch}}`` for every quantity both
        libraries measured.
    """
    out = {}
    for what in whats:
        best = {}
        for lib in ("jaxdiff", "torch"):
            mine = {
                name.split()[1]: c["images_per_s"]
                for name, c in cases.items()
                if name.split()[0] == lib and name.endswith(what)
            }
            if mine:
                best[lib] = max(mine.items(), key=lambda kv: kv[1])
        if len(best) == 2:
            (jp, jv), (tp, tv) = best["jaxdiff"], best["torch"]
            out[what] = {
                "jaxdiff": jp,
                "jaxdiff_images_per_s": jv,
                "torch": tp,
                "torch_images_per_s": tv,
                "ratio": jv / tv,
            }
    return out


def parse_args(argv=None):
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (median)")
    p.add_argument("--train-steps", type=int, default=None, help="train steps per timing")
    p.add_argument("--sample-steps", type=int, default=None, help="sampler steps per timing")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument(
        "--impl",
        default="auto",
        help="jaxdiff conv implementation (default auto, what the drivers use with no flags)",
    )
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--what", default="train,sample")
    p.add_argument("--no-torch", action="store_true", help="jaxdiff only")
    p.add_argument(
        "--torch-omp",
        default="PASSIVE",
        help="OMP_WAIT_POLICY of the PyTorch process: PASSIVE (default; its best on a shared "
        "machine, where spinning OpenMP threads collapse 3-4x), ACTIVE, or 'default'",
    )
    p.add_argument(
        "--no-malloc-tuning",
        action="store_true",
        help="leave glibc malloc at its defaults in both processes",
    )
    p.add_argument(
        "--pause", type=float, default=1.0, help="seconds of idle before each timed call"
    )
    args = p.parse_args(argv)
    args.precisions = args.precisions.split(",")
    args.what = args.what.split(",")
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.train_steps = args.train_steps or (4 if args.quick else 10)
    args.sample_steps = args.sample_steps or (10 if args.quick else 25)
    return args


def _worker(side: str, args, conn) -> None:
    """Child process owning one library's cases; times the case named on ``conn``."""
    if side == "torch" and args.torch_omp != "default":
        os.environ["OMP_WAIT_POLICY"] = args.torch_omp  # before torch loads its OpenMP
    images = np.random.default_rng(0).integers(0, 256, (4096, 28, 28), dtype=np.uint8)
    try:
        cases = make_jax_cases(args, images) if side == "jax" else make_torch_cases(args, images)
        if side == "jax":
            cases.update(make_gemm_cases())
    except Exception as e:  # report set-up failures to the driver
        conn.send(("error", repr(e)))
        return
    conn.send(("cases", list(cases)))
    while True:
        name = conn.recv()
        if name is None:
            return
        try:
            conn.send(("ok", cases[name]()))
        except Exception as e:
            conn.send(("error", f"{name}: {e!r}"))


def make_gemm_cases() -> dict[str, Callable[[], float]]:
    """XLA GEMM (2048^3) timings, fp32 and bf16 with fp32 accumulation: the in-run ceiling."""
    import jax
    import jax.numpy as jnp

    cases = {}
    for prec, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
        a = jnp.ones((2048, 2048), dtype)
        f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))

        def once(f=f, a=a):
            t0 = time.perf_counter()
            for _ in range(3):
                jax.block_until_ready(f(a, a))
            return (time.perf_counter() - t0) / 3

        cases[f"gemm {prec}"] = once
    return cases


def _ask(conn, name):
    conn.send(name)
    status, value = conn.recv()
    if status != "ok":
        raise RuntimeError(value)
    return value


def main(argv=None) -> dict:
    """Run the benchmark; print one line per case and one ``ratio`` line per comparison.

    Each library runs in its own child process (no shared thread pools), and the driver
    times the cases round-robin, each jaxdiff case next to its PyTorch peer.
    """
    import multiprocessing as mp

    args = parse_args(argv)
    load_before = os.getloadavg()
    if args.no_malloc_tuning:
        os.environ["JAXDIFF_MALLOC_TUNING"] = "0"
    else:
        # The same allocator settings for both processes: jaxdiff applies them itself
        # (jaxdiff.app.allocator.configure_cpu_allocator); PyTorch reads them from the environment.
        try:
            from jaxdiff.app.allocator import MALLOC_ENV
        except ImportError:  # running from a checkout without installing jaxdiff
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from jaxdiff.app.allocator import MALLOC_ENV

        os.environ.update(MALLOC_ENV)
    ctx = mp.get_context("spawn")
    sides = ["jax"] if args.no_torch else ["jax", "torch"]
    conns, procs, owner = {}, [], {}
    for side in sides:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(side, args, child), daemon=True)
        proc.start()
        procs.append(proc)
        status, value = parent.recv()
        if status != "ok" and status != "cases":
            raise RuntimeError(value)
        conns[side] = parent
        for name in value:
            owner[name] = side
    order = []
    for prec in args.precisions:
        for what in args.what:
            order += [n for n in (f"jaxdiff {prec} {what}", f"torch {prec} {what}") if n in owner]
    order += [n for n in owner if n.startswith("gemm")]
    print(f"warming up {len(order)} cases ...", flush=True)
    for name in order:
        _ask(conns[owner[name]], name)
    times: dict[str, list[float]] = {k: [] for k in order}
    for r in range(args.rounds):
        for name in order:
            # Let the other process's worker threads stop spin-waiting before timing.
            time.sleep(args.pause)
            times[name].append(_ask(conns[owner[name]], name))
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    for conn in conns.values():
        conn.send(None)
    for proc in procs:
        proc.join(timeout=30)
    results = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "cases": {}}
    results["config"]["load_avg_before"] = load_before
    results["config"]["load_avg"] = os.getloadavg()  # after the run
    from unet_peer import cpu_info

    from jaxdiff.kernels import resolve_conv_impl

    results["config"]["resolved_impl"] = resolve_conv_impl(args.impl)
    results["config"]["cpu"] = cpu_info()
    print(f"jaxdiff conv impl {args.impl} -> {results['config']['resolved_impl']}")
    gemm = {p: 2 * 2048**3 / statistics.median(times[f"gemm {p}"]) / 1e9 for p in ("fp32", "bf16")}
    results["gemm_gflops"] = gemm
    print(
        f"in-run XLA GEMM 2048^3: fp32 {gemm['fp32']:.0f} GFLOP/s, bf16 {gemm['bf16']:.0f} "
        f"GFLOP/s (SPEC ceilings: fp32 {CEILING_GFLOPS['fp32']:.0f}, "
        f"bf16 {CEILING_GFLOPS['bf16']:.0f})"
    )
    for name in order:
        if name.startswith("gemm"):
            continue
        ts = times[name]
        med = statistics.median(ts)
        ips = throughput(name, med, args)
        prec = name.split()[1]
        gf = gflops(name, ips)
        unit = "img/s" if name.endswith("train") else "img/s per 100 steps"
        results["cases"][name] = {
            "images_per_s": ips,
            "gflops": gf,
            "ceiling_share": gf / CEILING_GFLOPS[prec],
            "seconds": ts,
        }
        print(
            f"{name:22s} {ips:8.1f} {unit:20s} {gf:7.1f} GFLOP/s "
            f"({100 * gf / CEILING_GFLOPS[prec]:4.1f}% of {CEILING_GFLOPS[prec]:.0f})"
        )
    results["ratios"], results["ratio_rounds"] = {}, {}
    for prec in args.precisions:
        for what in args.what:
            j, t = f"jaxdiff {prec} {what}", f"torch {prec} {what}"
            if j in results["cases"] and t in results["cases"]:
                cj, ct = results["cases"][j], results["cases"][t]
                ratio = cj["images_per_s"] / ct["images_per_s"]
                # Per-round ratios (each pair timed back to back) show the spread.
                pair = sorted(b / a for a, b in zip(cj["seconds"], ct["seconds"], strict=True))
                results["ratios"][f"{prec} {what}"] = ratio
                results["ratio_rounds"][f"{prec} {what}"] = pair
                print(
                    f"{what:6s} {prec}: jaxdiff {cj['images_per_s']:.1f} vs "
                    f"torch {ct['images_per_s']:.1f} -> ratio {ratio:.2f} "
                    f"(rounds {pair[0]:.2f}..{pair[-1]:.2f}; jaxdiff {cj['gflops']:.0f} GFLOP/s, "
                    f"{100 * cj['ceiling_share']:.0f}% of ceiling)"
                )
    results["best_against_best"] = best_against_best(results["cases"], args.what)
    for what, b in results["best_against_best"].items():
        print(
            f"{what:6s} best against best: jaxdiff {b['jaxdiff']} {b['jaxdiff_images_per_s']:.1f}"
            f" vs torch {b['torch']} {b['torch_images_per_s']:.1f} -> ratio {b['ratio']:.2f}"
        )
    print(
        f"load average (1, 5, 15 min) before the run: {load_before}, "
        f"after: {results['config']['load_avg']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
