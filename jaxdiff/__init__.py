"""jaxdiff: pure-functional JAX diffusion models on MNIST.

Public entry points (see the API reference for the rest):

* :class:`Config` and its parts — one frozen config object per run;
* :func:`load_mnist`, :func:`normalize` — data;
* :func:`make_schedule`, :func:`q_sample` — the Gaussian forward process;
* :func:`build_model` — the starter CNN and the UNet;
* :class:`TrainState`, :func:`make_train_step`, :func:`make_run_steps` — the trainer;
* :mod:`recipes` — the study's configurations as functions (``recipes.starter()``);
* :mod:`pipeline` — a run assembled from its config: :func:`build`, :func:`train`,
  :func:`generate` (in memory, no files);
* :data:`SAMPLERS` — every sampler behind one interface (:mod:`jaxdiff.samplers`);
* :func:`ddpm_sample`, :func:`ddim_sample` — the DDPM scans themselves;
* :func:`fit`, :func:`load_run` — runs with checkpoints and logs (the application layer).
"""

from jaxdiff import pipeline, recipes
from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.data import load_mnist, normalize
from jaxdiff.models import build_model
from jaxdiff.pipeline import build, generate, train
from jaxdiff.samplers import SAMPLERS
from jaxdiff.sampling import ddim_sample, ddpm_sample
from jaxdiff.schedules import make_schedule, q_sample
from jaxdiff.train import TrainState, make_run_steps, make_train_step

__version__ = "0.1.0"

#: Names served lazily from the application layer, so that importing the core (schedules,
#: degradations, sampling, losses, train, models, ops) loads no orbax, matplotlib or tqdm.
_APP = {
    "fit": "jaxdiff.app.runner",
    "load_run": "jaxdiff.app.runner",
}


def __getattr__(name: str):
    """Import an application-layer name (``fit``, ``load_run``) on first use."""
    if name in _APP:
        import importlib

        return getattr(importlib.import_module(_APP[name]), name)
    raise AttributeError(f"module 'jaxdiff' has no attribute {name!r}")


__all__ = [
    "SAMPLERS",
    "Config",
    "ModelConfig",
    "ProcessConfig",
    "TrainConfig",
    "TrainState",
    "build",
    "build_model",
    "ddim_sample",
    "ddpm_sample",
    "fit",
    "generate",
    "load_mnist",
    "load_run",
    "make_run_steps",
    "make_schedule",
    "make_train_step",
    "normalize",
    "pipeline",
    "q_sample",
    "recipes",
    "train",
]
