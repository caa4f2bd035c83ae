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
