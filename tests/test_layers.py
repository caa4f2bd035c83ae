"""The layering: the pure core imports no application-layer library and does nothing at import."""

from __future__ import annotations

import subprocess
import sys

CORE = (
    "schedules",
    "degradations",
    "sampling",
    "losses",
    "train",
    "cold",
    "models",
    "kernels",
    "kernels.conv",
    "kernels.fused",
    "kernels.onednn",
    "kernels.native",
    "kernels.registry",
    "config",
    "recipes",
    "samplers",
    "pipeline",
    "start_states",
)
APP_LIBS = ("orbax", "matplotlib", "tqdm")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in {APP_LIBS!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_importing_the_core_loads_no_checkpoint_plotting_or_progress_library():
    assert _loaded_after("".join(f"import jaxdiff.{m}\n" for m in CORE)) == []


def test_the_application_names_still_load_on_first_use():
    assert "orbax" in _loaded_after("from jaxdiff import fit\nassert callable(fit)")


def test_importing_the_core_and_fidelity_tunes_no_allocator():
    # the glibc allocator tuning is an explicit call of the entry points, not an import effect
    probe = (
        "import ctypes\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('a C library was loaded at import')\n"
        "ctypes.CDLL = refuse\n"
        + "".join(f"import jaxdiff.{m}\n" for m in CORE)
        + "import jaxdiff.fidelity.evaluation\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


def _jaxdiff_imports(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxdiff"):
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("jaxdiff")}
    return names


def test_each_layer_imports_only_from_the_layers_below_it():
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1] / "jaxdiff"
    above = {"core": ("jaxdiff.fidelity", "jaxdiff.app"), "fidelity": ("jaxdiff.app",)}
    layers = {
        "core": [*pkg.glob("*.py"), *pkg.glob("models/*.py")],
        "fidelity": pkg.glob("fidelity/*.py"),
    }
    for layer, files in layers.items():
        for f in files:
            if f.name == "__init__.py" and f.parent == pkg:
                continue  # the package serves fit/generate/load_run lazily, on first use
            bad = sorted(n for n in _jaxdiff_imports(f) if n.startswith(above[layer]))
            assert not bad, f"{f.relative_to(pkg.parent)} ({layer}) imports {bad}"
