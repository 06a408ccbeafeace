"""KdEmbedding loaded from the safetensors export, against the kdcompress binary: same vectors
as its decoder, gradients that flow.

Needs the installed package (``make python``) and the built binaries (see conftest.py);
``make test`` runs it with pytest.
"""

import json
import struct
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch

from kdcompress.torch import KdEmbedding

from conftest import SHAPES, binary, run

BIN = binary("KDCOMPRESS_BIN", "target/release/kdcompress")
MAKE_KDZ = binary("KDCOMPRESS_MAKE_KDZ", "target/release/examples/make_kdz")


class ExportedTables(unittest.TestCase):
    """One random .kdz per composer kind, exported as safetensors, .npy and text."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = Path(cls.tmp.name)
        for i, (kind, shape) in enumerate(SHAPES.items()):
            kdz = cls.dir / f"{kind}.kdz"
            run(MAKE_KDZ, "random", kind, kdz, *shape, "--seed", str(10 + i))
            for ext in ("safetensors", "npy", "txt", "bin"):
                run(BIN, "export", kdz, "-o", cls.dir / f"{kind}.{ext}")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def load(self, kind):
        return KdEmbedding.from_safetensors(str(self.dir / f"{kind}.safetensors"))

    def test_forward_equals_kdcompress_decode(self):
        for kind in SHAPES:
            with self.subTest(kind=kind):
                emb = self.load(kind)
                expected = np.load(self.dir / f"{kind}.npy")
                self.assertEqual(expected.dtype, np.float32)
                self.assertEqual(expected.shape, (emb.num_embeddings, emb.embedding_dim))
                with torch.no_grad():
                    got = emb(torch.arange(emb.num_embeddings)).numpy()
                self.assertLess(float(np.abs(got - expected).max()), 1e-5)
                # Random weights give vectors of size about 1; all-zero output would pass
                # any tolerance, so make sure there is something to compare.
                self.assertGreater(float(np.abs(expected).max()), 0.1)

    def test_split_is_slice_assembly(self):
        # Group i fills columns floor(i d / D) .. floor((i + 1) d / D) with the front of its
        # chosen code vector; the rest of each code vector is zero padding that gets no gradient.
        emb = self.load("split")
        idx = torch.tensor([0, 7, 7, 42])
        codes = emb.codes[idx].long()
        want = []
        for r in range(len(idx)):
            row = []
            for i in range(emb.num_codebooks):
                width = (i + 1) * 13 // 5 - i * 13 // 5
                row.append(emb.codebooks[i, codes[r, i], :width])
            want.append(torch.cat(row))
        got = emb(idx)
        torch.testing.assert_close(got, torch.stack(want), rtol=0, atol=0)
        self.assertEqual(float(emb.codebooks.detach()[0, :, 2].abs().sum()), 0.0)
        got.pow(2).sum().backward()
        self.assertEqual(float(emb.codebooks.grad[0, :, 2].abs().sum()), 0.0)
        self.assertGreater(float(emb.codebooks.grad[1, :, 2].abs().sum()), 0.0)

    def test_any_index_shape(self):
        emb = self.load("lstm")
        idx = torch.tensor([[3, 0, 7], [7, 7, 1]])
        with torch.no_grad():
            batch = emb(idx)
            flat = emb(idx.reshape(-1))
        self.assertEqual(tuple(batch.shape), (2, 3, emb.embedding_dim))
        torch.testing.assert_close(batch.reshape(-1, emb.embedding_dim), flat)

    def test_gradients_reach_codebooks_and_composer(self):
        for kind in SHAPES:
            with self.subTest(kind=kind):
                emb = self.load(kind)
                idx = torch.tensor([0, 5, 9, 5])
                emb(idx).pow(2).sum().backward()
                grad = emb.codebooks.grad
                self.assertIsNotNone(grad)
                # Only the codes the batch uses get a gradient.
                used = emb.codes[idx].long()
                for i in range(emb.num_codebooks):
                    rows = set(used[:, i].tolist())
                    for k in range(emb.num_codes):
                        norm = float(grad[i, k].norm())
                        if k in rows:
                            self.assertGreater(norm, 0.0, (i, k))
                        else:
                            self.assertEqual(norm, 0.0, (i, k))
                for name, p in emb.composer.named_parameters():
                    self.assertIsNotNone(p.grad, name)
                    self.assertGreater(float(p.grad.abs().sum()), 0.0, name)
                self.assertNotIn("codes", dict(emb.named_parameters()))
                self.assertIn("codes", dict(emb.named_buffers()))

    def test_codes_are_not_trained(self):
        emb = self.load("linear")
        before = emb.codes.clone()
        opt = torch.optim.SGD(emb.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            emb(torch.arange(10)).sum().backward()
            opt.step()
        self.assertTrue(torch.equal(before, emb.codes))

    def test_state_dict_names_are_the_export_names(self):
        from safetensors import safe_open

        for kind in SHAPES:
            with self.subTest(kind=kind):
                with safe_open(str(self.dir / f"{kind}.safetensors"), "pt") as f:
                    names = set(f.keys())
                self.assertEqual(set(self.load(kind).state_dict()), names)

    def test_vocab_and_metadata(self):
        emb = self.load("mlp")
        self.assertEqual(emb.vocab[:3], ["w0", "w1", "w2"])
        self.assertEqual(emb.index("w42"), 42)
        with self.assertRaisesRegex(KeyError, "did you mean w4"):
            emb.index("w4x")
        self.assertEqual(emb.source_metadata["method"], "random")
        # K = 300 does not fit a byte: the export uses int16.
        self.assertEqual(emb.codes.dtype, torch.int16)
        self.assertEqual(self.load("linear").codes.dtype, torch.uint8)

    def test_save_round_trip(self):
        emb = self.load("lstm")
        with torch.no_grad():
            emb.codebooks.add_(0.25)
        path = self.dir / "lstm-tuned.safetensors"
        emb.save_safetensors(str(path))
        back = KdEmbedding.from_safetensors(str(path))
        idx = torch.arange(emb.num_embeddings)
        with torch.no_grad():
            torch.testing.assert_close(back(idx), emb(idx), rtol=0, atol=0)
        self.assertEqual(back.vocab, emb.vocab)

    def test_text_exports_hold_the_same_vectors(self):
        for kind in SHAPES:
            with self.subTest(kind=kind):
                expected = np.load(self.dir / f"{kind}.npy")
                words, rows = [], []
                for line in (self.dir / f"{kind}.txt").read_text().splitlines():
                    parts = line.split(" ")
                    words.append(parts[0])
                    rows.append([float(x) for x in parts[1:]])
                # The text holds each f32's shortest round-trip decimal: exact after parsing.
                np.testing.assert_array_equal(np.array(rows, dtype=np.float32), expected)
                raw = (self.dir / f"{kind}.bin").read_bytes()
                header, rest = raw.split(b"\n", 1)
                n, d = map(int, header.split())
                self.assertEqual((n, d), expected.shape)
                pos = 0
                for r in range(n):
                    space = rest.index(b" ", pos)
                    self.assertEqual(rest[pos:space].decode(), words[r])
                    vec = struct.unpack(f"<{d}f", rest[space + 1 : space + 1 + 4 * d])
                    np.testing.assert_array_equal(np.array(vec, dtype=np.float32), expected[r])
                    self.assertEqual(rest[space + 1 + 4 * d : space + 2 + 4 * d], b"\n")
                    pos = space + 2 + 4 * d
                self.assertEqual(pos, len(rest))

    def test_rejects_files_that_are_not_exports(self):
        from safetensors.torch import save_file

        path = self.dir / "plain.safetensors"
        save_file({"weight": torch.zeros(2, 2)}, str(path))
        with self.assertRaisesRegex(ValueError, "not a kdcompress safetensors export"):
            KdEmbedding.from_safetensors(str(path))
        bad = self.dir / "future.safetensors"
        tensors = {k: v for k, v in self.load("linear").state_dict().items()}
        save_file(tensors, str(bad), metadata={"format": "kdcompress", "format_version": "2"})
        with self.assertRaisesRegex(ValueError, "layout version '2'"):
            KdEmbedding.from_safetensors(str(bad))


class Validation(unittest.TestCase):
    def config(self, **over):
        c = {"kind": "linear", "num_codebooks": 2, "num_codes": 4, "code_dim": 3, "hidden": 0, "out_dim": 5}
        c.update(over)
        return c

    def test_rejects_bad_codes_and_config(self):
        ok = torch.tensor([[0, 3], [1, 2]])
        KdEmbedding(ok, self.config())
        with self.assertRaisesRegex(ValueError, "lie in 0..3"):
            KdEmbedding(torch.tensor([[0, 4]]), self.config())
        with self.assertRaisesRegex(ValueError, "expected \\[N, 2\\]"):
            KdEmbedding(torch.tensor([[0, 1, 2]]), self.config())
        with self.assertRaisesRegex(ValueError, "unknown composer kind"):
            KdEmbedding(ok, self.config(kind="gru"))
        with self.assertRaisesRegex(ValueError, "concat needs"):
            KdEmbedding(ok, self.config(kind="concat", out_dim=7))
        with self.assertRaisesRegex(ValueError, "split needs num_codebooks <= out_dim"):
            KdEmbedding(ok, self.config(kind="split", code_dim=1, out_dim=1))
        need = "code_dim = ceil\\(out_dim / num_codebooks\\) = 3, got 2"
        with self.assertRaisesRegex(ValueError, need):
            KdEmbedding(ok, self.config(kind="split", code_dim=2, out_dim=5))
        KdEmbedding(ok, self.config(kind="split", code_dim=3, out_dim=5))
        with self.assertRaisesRegex(ValueError, "shape"):
            KdEmbedding(ok, self.config(), {"codebooks": torch.zeros(2, 4, 4),
                                            "composer.out.weight": torch.zeros(5, 3),
                                            "composer.out.bias": torch.zeros(5)})
        with self.assertRaisesRegex(ValueError, "missing"):
            KdEmbedding(ok, self.config(), {"codebooks": torch.zeros(2, 4, 3)})


if __name__ == "__main__":
    unittest.main()
