"""The wheel installs into a fresh virtualenv holding nothing but numpy, and works there
without torch.

``KDCOMPRESS_WHEEL`` names the wheel and ``KDCOMPRESS_WHEELHOUSE`` a folder with a numpy wheel
(``make python`` provides both), so the test installs with ``--no-index``: no network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

WHEEL = os.environ.get("KDCOMPRESS_WHEEL")
WHEELHOUSE = os.environ.get("KDCOMPRESS_WHEELHOUSE")


@pytest.mark.skipif(not (WHEEL and WHEELHOUSE), reason="KDCOMPRESS_WHEEL/WHEELHOUSE not set")
def test_wheel_in_fresh_venv_without_torch(tables, tmp_path):
    env_dir = tmp_path / "fresh"
    # No pip inside: the running interpreter's pip installs into it (pip --python).
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
            "--no-index", "--find-links", str(WHEELHOUSE), "numpy", str(WHEEL),
        ],
        check=True,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "list", "--format=freeze"],
        check=True, capture_output=True, text=True,
    ).stdout
    names = sorted(line.split("==")[0].lower() for line in listed.split())
    assert names == ["kdcompress", "numpy"], names
    script = f"""
import sys
import kdcompress
kd = kdcompress.load({str(tables['glove'])!r})
assert kd.most_similar("monday", topn=3)
assert kd.decode_all().shape == (len(kd), 50)
assert "torch" not in sys.modules
try:
    import kdcompress.torch
except ModuleNotFoundError as e:
    assert e.name == "torch", e
else:
    raise AssertionError("torch should be missing here")
print("ok", kdcompress.__file__)
"""
    done = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # The installed package, not the source tree.
    assert str(env_dir) in done.stdout
    assert Path(WHEEL).name.startswith("kdcompress-")
    assert "abi3" in Path(WHEEL).name
