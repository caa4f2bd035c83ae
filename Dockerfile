# jaxdiff container: CPU jax by default, CUDA jax with a build argument.
#
# Build:
#   docker build -t jaxdiff .                              # CPU
#   docker build -t jaxdiff:cuda --build-arg JAX_EXTRA=cuda12 .   # NVIDIA GPU (jax[cuda12])
#
# Run (MNIST's four IDX files mounted at /data):
#   docker run --rm -v "$PWD/../shared/data/mnist:/data:ro" jaxdiff          # test suite
#   docker run --rm -v "$PWD/../shared/data/mnist:/data:ro" -v "$PWD/runs:/app/runs" jaxdiff \
#       python experiments/ddpm.py --limit 2048 --epochs 1 --workdir runs/docker-smoke
#   docker run --rm --gpus all -v ...:/data:ro jaxdiff:cuda python experiments/ddpm.py --lr 2e-4
#
# The install step is scripts/install.sh, the same script .ci/run uses.
FROM python:3.11-slim

# Extras of the jaxdiff package to install (dev = pytest + ruff for the default command).
ARG EXTRAS=dev
# jax extra for accelerators, e.g. cuda12; empty = CPU jax.
ARG JAX_EXTRA=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    JAXDIFF_DATA_DIR=/data

# g++ compiles jaxdiff's oneDNN convolution kernels (jaxdiff.kernels.build(), which
# scripts/install.sh calls); without it conv_impl "auto" runs the pure-JAX path (one warning).
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . /app
RUN JAX_EXTRA="${JAX_EXTRA}" PYTHON=python bash scripts/install.sh "${EXTRAS}"

VOLUME ["/data"]

# Default: the test suite (reads MNIST from /data). Override with any command, e.g. a short
# training run: python experiments/ddpm.py --limit 2048 --epochs 1
CMD ["python", "-m", "pytest"]
