"""The quality benchmark's ratios (scripts/bench_quality.py): what each kd row is judged against.

The README's "Where it stands" table and every closing note quote these ratios, so which faiss
rows and which additive row a kd row is compared with is pinned here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_quality as bench  # noqa: E402
from bench_rows import row  # noqa: E402


def by_method(items):
    return {it["method"]: it for it in items}


def test_conditioned_rows_are_judged_against_the_additive_row_of_their_own_k():
    rows = [
        row("kd256", "kdcompress", 64, 2.0, 0.50),
        row("kdc256", "kdcompress", 64, 1.8, 0.52),
        row("kd32", "kdcompress", 60, 3.0, 0.40),
        row("kdc32", "kdcompress", 60, 2.7, 0.44),
        row("rq5", "faiss", 64, 2.5, 0.45, seconds=5.0),
        row("rq5-k32", "faiss", 60, 4.0, 0.30, seconds=2.0),
    ]
    got = by_method(bench.ratios(rows))
    kdc256, kdc32 = got["kdc256 (64 bits)"], got["kdc32 (60 bits)"]
    assert kdc256["mse_ratio_additive"] == pytest.approx(1.8 / 2.0)
    assert kdc256["nn10_ratio_additive"] == pytest.approx(0.52 / 0.50)
    assert kdc32["mse_ratio_additive"] == pytest.approx(2.7 / 3.0)
    assert kdc32["nn10_ratio_additive"] == pytest.approx(0.44 / 0.40)
    # Additive rows have no additive ratio.
    assert "mse_ratio_additive" not in got["kd256 (64 bits)"]
    assert "mse_ratio_additive" not in got["kd32 (60 bits)"]


def test_kd_rows_are_judged_against_faiss_rows_of_at_most_their_code_bits():
    rows = [
        row("kd32", "kdcompress", 60, 3.0, 0.40),
        row("kdc32", "kdcompress", 60, 2.7, 0.44),
        row("rq5", "faiss", 64, 2.5, 0.45, seconds=5.0),  # 64 bits: more than kd32's 60
        row("rq5-k32", "faiss", 60, 4.0, 0.30, seconds=2.0),
        row("lsq-k32", "faiss", 60, 3.5, 0.35, seconds=8.0),
    ]
    got = by_method(bench.ratios(rows))
    kd32 = got["kd32 (60 bits)"]
    assert kd32["best_faiss"] == "lsq-k32 (60 bits)"
    assert kd32["mse_ratio"] == pytest.approx(3.0 / 3.5)
    assert kd32["nn10_ratio_best"] == pytest.approx(0.40 / 0.35)
    # Time is compared with faiss RQ rows among those, never with a larger code's.
    assert set(k for k in kd32 if k.startswith("time_ratio_")) == set()
    assert got["kdc32 (60 bits)"]["mse_ratio"] == pytest.approx(2.7 / 3.5)


def test_conditioned_k32_runs_at_kd32s_shape():
    for bits in (64, 160, 256):
        assert bench.kd_shape("kdc32", bits) == bench.kd_shape("kd32", bits)
    assert bench.kd_shape("kdc32", 160) == (32, 32)
    assert bench.method_label("kdc32", (32, 12)) == "kd conditioned K=32 D=12 (60 bits)"


def test_only_the_kd_rows_are_judged_not_the_papers_methods_nor_faiss():
    rows = [
        row("kd256", "kdcompress", 64, 2.0, 0.50),
        row("dccl", "kdcompress", 64, 4.0, 0.20),
        row("dpq-vq", "kdcompress", 64, 3.5, 0.25),
        row("rq5", "faiss", 64, 2.5, 0.45, seconds=5.0),
    ]
    assert [it["method"] for it in bench.ratios(rows)] == ["kd256 (64 bits)"]
    assert set(bench.JUDGED) | set(bench.PAPER_METHODS) == set(bench.KD_METHODS)
