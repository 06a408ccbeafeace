"""Shared fixtures: the built binaries and one `.kdz` of every composer kind, with the CLI's
exports of each, so that the package is checked against the command line.

``KDCOMPRESS_BIN`` (default ``target/release/kdcompress``) and ``KDCOMPRESS_MAKE_KDZ`` (default
``target/release/examples/make_kdz``) point at the binaries; ``make test`` builds both.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "glove.6B.50d.head5k.txt"

# Sizes per kind: K = 300 makes the codes 9 bits (I16 in the export); concat needs D * d' >= d;
# split needs d' = ceil(d / D) (13 columns over 5 groups: widths 2, 3, 2, 3, 3); conditioned
# needs d' = d, and its W_o is random, so the step network changes every vector; sum needs d' = d.
SHAPES: Dict[str, List[str]] = {
    "linear": ["--n", "200", "-K", "16", "-D", "6", "--code-dim", "8", "--out-dim", "20"],
    "mlp": ["--n", "150", "-K", "300", "-D", "4", "--code-dim", "6", "--hidden", "9", "--out-dim", "12"],
    "lstm": ["--n", "120", "-K", "8", "-D", "5", "--code-dim", "7", "--hidden", "10", "--out-dim", "11"],
    "concat": ["--n", "100", "-K", "4", "-D", "5", "--code-dim", "3", "--out-dim", "13"],
    "split": ["--n", "110", "-K", "6", "-D", "5", "--code-dim", "3", "--out-dim", "13"],
    "conditioned": ["--n", "130", "-K", "12", "-D", "5", "--code-dim", "10", "--hidden", "8", "--out-dim", "10"],
    "sum": ["--n", "90", "-K", "10", "-D", "4", "--code-dim", "7", "--out-dim", "7"],
}


def binary(env: str, default: str) -> Path:
    path = Path(os.environ.get(env, ROOT / default))
    if not path.is_file():
        raise RuntimeError(
            f"{path} does not exist: build it first (cargo build --release "
            f"--example make_kdz) or point {env} at it"
        )
    return path


def run(*args: object) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stderr}")
    return done


@pytest.fixture(scope="session")
def bin_path() -> Path:
    return binary("KDCOMPRESS_BIN", "target/release/kdcompress")


@pytest.fixture(scope="session")
def tables(tmp_path_factory: pytest.TempPathFactory, bin_path: Path) -> Dict[str, Path]:
    """One random `.kdz` per composer kind, plus `glove`: real residual k-means codes of the
    first 5,000 GloVe words (K = 16, D = 8), where neighbours and shared codes mean something.
    Beside each: the CLI's `.npy` export and its word list."""
    make_kdz = binary("KDCOMPRESS_MAKE_KDZ", "target/release/examples/make_kdz")
    out = tmp_path_factory.mktemp("tables")
    paths = {}
    for i, (kind, shape) in enumerate(SHAPES.items()):
        paths[kind] = out / f"{kind}.kdz"
        run(make_kdz, "random", kind, paths[kind], *shape, "--seed", str(20 + i))
    paths["glove"] = out / "glove.kdz"
    run(make_kdz, "rvq", FIXTURE, paths["glove"], "-K", "16", "-D", "8", "--iters", "8")
    for name, kdz in paths.items():
        run(bin_path, "export", kdz, "-o", out / f"{name}.npy", "--words", out / f"{name}.words")
    return paths
