"""`kdcompress.load` against the command line: the same vectors as `kdcompress export`, the same
neighbours as `kdcompress similar`, the same shared codes as `kdcompress codes`, and errors
(never crashes) for damaged files."""

from __future__ import annotations

import random
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kdcompress
from kdcompress import KdzError, UnknownWordError

from conftest import SHAPES, run

ALL = list(SHAPES) + ["glove"]


@pytest.mark.parametrize("name", ALL)
def test_decode_equals_cli_export(tables, name):
    kd = kdcompress.load(tables[name])
    expected = np.load(tables[name].with_suffix(".npy"))
    words = tables[name].with_suffix(".words").read_text().splitlines()
    assert kd.words == words
    assert len(kd) == len(words) == expected.shape[0]
    assert kd.vector_size == expected.shape[1]
    got = kd.decode_all()
    assert got.dtype == np.float32 and got.flags.writeable
    # One decoder in Rust serves both: equal to the bit.
    np.testing.assert_array_equal(got, expected)
    rows = [3, 0, len(kd) - 1, 3]
    np.testing.assert_array_equal(kd.vectors(rows), expected[rows])
    np.testing.assert_array_equal(kd.vectors([words[r] for r in rows]), expected[rows])
    np.testing.assert_array_equal(kd.vectors((words[3], 0)), expected[[3, 0]])
    np.testing.assert_array_equal(kd[words[5]], expected[5])
    np.testing.assert_array_equal(kd[5], expected[5])
    # Any shape of ids keeps its shape.
    grid = np.array([[1, 2, 3], [4, 5, 6]])
    assert kd.vectors(grid).shape == (2, 3, kd.vector_size)
    np.testing.assert_array_equal(kd.vectors(grid)[1, 2], expected[6])
    assert kd.vectors([]).shape == (0, kd.vector_size)


def test_lookup_names_follow_gensim(tables):
    kd = kdcompress.load(tables["glove"])
    assert kd.words[:3] == ["the", ",", "."]
    assert kd.index("king") == kd.words.index("king") == kd.key_to_index["king"]
    assert kd.get_index("king") == kd.index("king")
    assert kd.get_index("no-such-word", -1) == -1
    assert "king" in kd and "no-such-word" not in kd and 3 not in kd
    assert kd.has_index_for("king")
    assert kd.index_to_key is kd.words
    v = kd.get_vector("king", norm=True)
    assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
    assert kd.similarity("king", "queen") == pytest.approx(
        float(np.dot(kd["king"], kd["queen"]) / np.linalg.norm(kd["king"]) / np.linalg.norm(kd["queen"])),
        abs=1e-6,
    )
    assert kd.config["kind"] == "sum"
    assert kd.bits_per_word == 8 * 4
    assert kd.version[0] == 1
    assert kd.metadata["method"] == "residual-kmeans"
    assert "glove.kdz" in repr(kd)


def parse_similar(stdout: str):
    """`kdcompress similar` prints `rank  word  cosine` lines under a heading."""
    found = []
    for line in stdout.splitlines()[1:]:
        rank, word, cosine = line.split()
        found.append((word, float(cosine)))
    return found


@pytest.mark.parametrize("word", ["king", "monday", "the", "france"])
def test_most_similar_equals_cli(tables, bin_path, word):
    kd = kdcompress.load(tables["glove"])
    cli = parse_similar(run(bin_path, "similar", tables["glove"], word, "-k", "12").stdout)
    ours = kd.most_similar(word, topn=12)
    assert [w for w, _ in ours] == [w for w, _ in cli]
    for (_, c), (_, want) in zip(ours, cli):
        assert round(c, 3) == pytest.approx(want, abs=1e-9)
    assert all(isinstance(c, float) for _, c in ours)


def test_most_similar_random_kinds_equal_cli(tables, bin_path):
    for kind in SHAPES:
        kd = kdcompress.load(tables[kind])
        cli = parse_similar(run(bin_path, "similar", tables[kind], "w7", "-k", "5").stdout)
        assert [w for w, _ in kd.most_similar("w7", topn=5)] == [w for w, _ in cli], kind


def test_most_similar_lists_and_vectors(tables):
    kd = kdcompress.load(tables["glove"])
    unit = kd.decode_all()
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    query = unit[kd.index("king")] - unit[kd.index("man")] + unit[kd.index("woman")]
    scores = unit @ (query / np.linalg.norm(query))
    for w in ("king", "man", "woman"):
        scores[kd.index(w)] = -np.inf
    want = [kd.words[i] for i in np.argsort(-scores, kind="stable")[:5]]
    got = kd.most_similar(positive=["king", "woman"], negative=["man"], topn=5)
    assert [w for w, _ in got] == want
    by_vector = kd.similar_by_vector(kd["king"], topn=3)
    assert by_vector[0][0] == "king" and by_vector[0][1] == pytest.approx(1.0, abs=1e-5)
    assert kd.most_similar("king", topn=0) == []
    with pytest.raises(ValueError, match="at least one"):
        kd.most_similar()


def test_same_code_and_codes_equal_cli(tables, bin_path):
    kd = kdcompress.load(tables["glove"])
    codes = kd.codes
    assert codes.shape == (len(kd), 8) and codes.dtype == np.uint16
    assert not codes.flags.writeable
    assert int(codes.max()) < 16
    # The export holds the same codes.
    from safetensors import safe_open

    out = tables["glove"].with_suffix(".safetensors")
    run(bin_path, "export", tables["glove"], "-o", out, "--force")
    with safe_open(str(out), framework="np") as f:
        np.testing.assert_array_equal(f.get_tensor("codes").astype(np.uint16), codes)
    # A word that shares its code: the CLI lists the same others.
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    row = int(np.flatnonzero(counts[inverse.reshape(-1)] > 1)[0])
    word = kd.words[row]
    same = kd.same_code(word)
    assert same and word not in same
    assert all(np.array_equal(kd.code(w), kd.code(word)) for w in same)
    line = run(bin_path, "codes", tables["glove"], word, "--max-words", "1000").stdout.splitlines()[1]
    assert line.split(": ", 1)[1].split() == same
    lonely = int(np.flatnonzero(counts[inverse.reshape(-1)] == 1)[0])
    assert kd.same_code(lonely) == []


def test_unknown_word_suggests_like_the_cli(tables, bin_path):
    kd = kdcompress.load(tables["glove"])
    with pytest.raises(UnknownWordError) as caught:
        kd["kingg"]
    err = caught.value
    assert isinstance(err, KdzError) and isinstance(err, ValueError) and isinstance(err, KeyError)
    assert err.word == "kingg" and err.path == str(tables["glove"])
    assert err.suggestions[:2] == ["king", "kings"]
    cli = subprocess.run(
        [str(bin_path), "codes", str(tables["glove"]), "kingg"], capture_output=True, text=True
    )
    assert cli.returncode != 0
    assert str(err) in cli.stderr
    assert str(err).startswith(str(tables["glove"]))
    for call in (
        lambda: kd.index("kingg"),
        lambda: kd.vectors(["king", "kingg"]),
        lambda: kd.most_similar("kingg"),
        lambda: kd.same_code("kingg"),
    ):
        with pytest.raises(UnknownWordError, match="did you mean king"):
            call()
    with pytest.raises(IndexError):
        kd[len(kd)]
    with pytest.raises(IndexError):
        kd.vectors([0, -1])


def header_bytes(data: bytes, major: int) -> bytes:
    """`data` with another major version (bytes 8..10), header checksum left as it was: the
    reader checks the version first, as the spec says."""
    return data[:8] + struct.pack("<H", major) + data[10:]


def test_errors_name_the_file_and_the_reason(tables, tmp_path):
    data = tables["linear"].read_bytes()
    cases = {
        "truncated.kdz": (data[: len(data) // 2], "truncated"),
        "short.kdz": (data[:30], "truncated"),
        "empty.kdz": (b"", "truncated"),
        "corrupt.kdz": (data[:-100] + bytes([data[-100] ^ 0x10]) + data[-99:], "checksum"),
        "newer.kdz": (header_bytes(data, 2), "version 2.1 needs a reader for major version 2"),
        "text.kdz": (b"the 0.1 0.2\n" * 10, "not a .kdz file"),
    }
    for name, (content, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(KdzError, match=reason) as caught:
            kdcompress.load(path)
        assert str(caught.value).startswith(str(path)), caught.value
        assert caught.value.path == str(path)
    with pytest.raises(FileNotFoundError, match="no-such.kdz"):
        kdcompress.load(tmp_path / "no-such.kdz")


def test_damage_anywhere_is_an_error_not_a_crash(tables, tmp_path):
    rng = random.Random(5)
    for kind in ("lstm", "split"):
        data = tables[kind].read_bytes()
        path = tmp_path / f"{kind}.kdz"
        for i in range(60):
            damaged = bytearray(data)
            if i % 3 == 0:
                damaged = damaged[: rng.randrange(len(data))]
            else:
                at = rng.randrange(len(data))
                damaged[at] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(damaged))
            with pytest.raises(KdzError):
                kdcompress.load(path)


def test_import_does_not_load_torch(tables):
    script = (
        "import sys, kdcompress\n"
        f"kd = kdcompress.load({str(tables['lstm'])!r})\n"
        "kd.decode_all(); kd.most_similar('w1')\n"
        "assert 'torch' not in sys.modules, 'import kdcompress loaded torch'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_threads_share_one_table(tables):
    from concurrent.futures import ThreadPoolExecutor

    kd = kdcompress.load(tables["glove"])
    want = kd.decode_all()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: kd.decode_all(), range(8)))
    for got in results:
        np.testing.assert_array_equal(got, want)


def test_path_like_and_tensors(tables):
    kd = kdcompress.load(Path(tables["mlp"]))
    t = kd.tensors()
    c = kd.config
    assert t["codebooks"].shape == (c["num_codebooks"], c["num_codes"], c["code_dim"])
    assert set(t) == {
        "codebooks",
        "composer.out.weight",
        "composer.out.bias",
        "composer.hidden.weight",
        "composer.hidden.bias",
        "composer.hidden_out.weight",
    }
    assert kd.norms is None or kd.norms.shape == (len(kd),)
