import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> str:
    d = os.environ.get("JAXDIFF_DATA_DIR") or str(ROOT.parent / "shared" / "data" / "mnist")
    if (
        not Path(d, "train-images-idx3-ubyte.gz").exists()
        and not Path(d, "train-images-idx3-ubyte").exists()
    ):
        pytest.fail(f"MNIST not found in {d}; set JAXDIFF_DATA_DIR")
    return d


# Tests compile into their own process only: JAX's persistent cache (which the runner turns
# on) would write into the user's ~/.cache. tests/test_compile_cache.py turns it on itself.
os.environ.setdefault("JAXDIFF_XLA_CACHE", "0")
