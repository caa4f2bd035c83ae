#!/usr/bin/env bash
# Install jaxdiff (editable) with optional extras into the current Python environment.
#
# This is the one install path shared by `.ci/run` and the `Dockerfile`, so the container
# build and CI cannot drift apart.
#
# Usage:
#   scripts/install.sh [EXTRAS]        # default EXTRAS: dev,docs
#
# Environment:
#   PYTHON     interpreter to install into (default: python)
#   JAX_EXTRA  jax extra to add, e.g. "cuda12" installs jax[cuda12] for NVIDIA GPUs
#              (default: empty, CPU jax from the package's own dependencies)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
EXTRAS="${1:-dev,docs}"
JAX_EXTRA="${JAX_EXTRA:-}"

spec="${ROOT}"
if [[ -n "${EXTRAS}" ]]; then
  spec="${ROOT}[${EXTRAS}]"
fi

reqs=(-e "${spec}")
if [[ -n "${JAX_EXTRA}" ]]; then
  reqs+=("jax[${JAX_EXTRA}]")
fi

echo "[install] ${PYTHON} -m pip install ${reqs[*]}"
"${PYTHON}" -m pip install "${reqs[@]}"
"${PYTHON}" -c "import jax, jaxdiff; print('[install] jax', jax.__version__, 'devices:', jax.devices())"
# The native CPU kernels (oneDNN convolutions), compiled once per machine now rather than by the
# first run; where they cannot be built this warns why and the pure-JAX path runs instead.
"${PYTHON}" -c "import jaxdiff.kernels as k; print('[install] native CPU kernels:', 'built' if k.prepare() else 'not used')"
