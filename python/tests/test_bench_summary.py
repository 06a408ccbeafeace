"""The quality benchmark's summary grid (scripts/bench_quality.py `summary`), the table that
`make bench` prints first and the README copies: its columns, its rows and its digits."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_quality as bench  # noqa: E402
from bench_rows import row  # noqa: E402


def table(dataset, n, bits, rows, threads=2):
    return {"dataset": dataset, "n": n, "bits": bits, "threads": threads, "rows": rows,
            "ratios": bench.ratios(rows)}


def grid(text):
    """The summary's markdown table as a list of cell lists (header first)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_columns_run_from_the_smallest_table_each_by_budget_whatever_the_measuring_order():
    results = [
        table("glove-400k", 400_000, 64, [row("kd256", "kdcompress", 64, 2.5, 0.3)]),
        table("mpnet", 21_745, 160, [row("kd256", "kdcompress", 160, 2.0, 0.5)]),
        table("glove-20k", 20_000, 256, [row("kd256", "kdcompress", 256, 0.005, 0.9)]),
        table("mpnet", 21_745, 64, [row("kd256", "kdcompress", 64, 3.2, 0.4)]),
        table("glove-20k", 20_000, 64, [row("kd256", "kdcompress", 64, 1.3, 0.7)]),
    ]
    header = grid(bench.summary(results))[0]
    assert header == ["method", "glove-20k, 64 bits", "glove-20k, 256 bits", "mpnet, 64 bits",
                      "mpnet, 160 bits", "glove-400k, 64 bits"]
    # The per-table sections of the full report follow the same order.
    text = bench.markdown([dict(t, title=t["dataset"], original={"ws353": 0.5, "sl999": 0.3})
                           for t in results])
    at = [text.index(f"**{d}, {b} bits per word**") for d, b in
          [("glove-20k", 64), ("glove-20k", 256), ("mpnet", 64), ("mpnet", 160),
           ("glove-400k", 64)]]
    assert at == sorted(at)


def test_rows_follow_the_bench_method_order_and_empty_cells_stay_empty():
    # kdc32 measured last in one table, absent from the other: still listed with kd's rows.
    a = table("glove-20k", 20_000, 64, [row("rq5", "faiss", 64, 1.9, 0.6),
                                        row("kd256", "kdcompress", 64, 1.35, 0.68),
                                        row("kdc32", "kdcompress", 60, 2.3, 0.57)])
    b = table("glove-20k", 20_000, 160, [row("lsq", "faiss", 160, 1.2, 0.68),
                                         row("kd256", "kdcompress", 160, 0.07, 0.92)])
    cells = grid(bench.summary([b, a]))
    assert [c[0] for c in cells[1:]] == ["kd256", "kdc32", "rq5", "lsq"]
    by_key = {c[0]: c[1:] for c in cells[1:]}
    assert by_key["kdc32"][1] == "" and by_key["lsq"][0] == ""
    assert by_key["rq5"][1] == "" and by_key["kdc32"][0].startswith("2.300 / 0.570")


def test_small_errors_keep_four_significant_digits_and_the_lowest_is_bold():
    t = table("glove-20k", 20_000, 256, [row("kd256", "kdcompress", 256, 0.004810, 0.977),
                                         row("kdc256", "kdcompress", 256, 0.004697, 0.977),
                                         row("rq5", "faiss", 256, 0.01015, 0.968)])
    by_key = {c[0]: c[1] for c in grid(bench.summary([t]))[1:]}
    assert by_key["kd256"].startswith("0.004810 / 0.977")
    assert by_key["kdc256"].startswith("**0.004697 / 0.977")
    assert by_key["rq5"].startswith("0.01015 / 0.968")


def test_one_table_at_two_thread_counts_gets_two_columns():
    one = table("glove-20k", 20_000, 64, [row("kd256", "kdcompress", 64, 1.35, 0.68)], threads=1)
    two = table("glove-20k", 20_000, 64, [row("kd256", "kdcompress", 64, 1.40, 0.67)], threads=2)
    cells = grid(bench.summary([two, one]))
    assert cells[0][1:] == ["glove-20k, 64 bits, 1 thread", "glove-20k, 64 bits, 2 threads"]
    assert cells[1][1].startswith("**1.350") and cells[1][2].startswith("**1.400")


def test_thread_counts_read_as_english_in_titles_and_sections():
    assert [bench.threads_phrase(n) for n in (1, 2, 16)] == ["1 thread", "2 threads", "16 threads"]
    one = table("glove-20k", 20_000, 64, [row("kd256", "kdcompress", 64, 1.35, 0.68)], threads=1)
    one.update(title="GloVe 6B 50d, first 20,000 words", original={"ws353": 0.5, "sl999": 0.3})
    text = bench.markdown([one])
    assert "sl999 0.3000; 1 thread)" in text and "1 threads" not in text
