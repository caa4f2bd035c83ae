"""jaxdiff: pure-functional JAX diffusion models on MNIST.

Public entry points (see the API reference for the rest):

* :class:`Config` and its parts — one frozen config object per run;
* :func:`load_mnist`, :func:`normalize` — data;
* :func:`make_schedule`, :func:`q_sample` — the Gaussian forward process;
* :func:`build_model` — the starter CNN and the UNet;
* :class:`TrainState`, :func:`make_train_step`, :func:`make_run_steps` — the trainer;
* :func:`ddpm_sample`, :func:`ddim_sample` — samplers;
* :func:`fit`, :func:`load_run`, :func:`generate` — runs with checkpoints and logs.
"""

from jaxdiff.config import Config, ModelConfig, ProcessConfig, TrainConfig
from jaxdiff.data import load_mnist, normalize
from jaxdiff.models import build_model
from jaxdiff.runner import fit, generate, load_run
from jaxdiff.sampling import ddim_sample, ddpm_sample
from jaxdiff.schedules import make_schedule, q_sample
from jaxdiff.train import TrainState, make_run_steps, make_train_step

__version__ = "0.1.0"

__all__ = [
    "Config",
    "ModelConfig",
    "ProcessConfig",
    "TrainConfig",
    "TrainState",
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
    "q_sample",
]
