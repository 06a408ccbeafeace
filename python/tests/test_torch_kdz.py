"""`KdEmbedding.from_kdz`: every composer kind, the reader's vectors, gradients to the tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kdcompress
from kdcompress import UnknownWordError
from kdcompress.torch import KdEmbedding

from conftest import SHAPES, run

KINDS = list(SHAPES) + ["glove"]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", KINDS)
def test_forward_equals_reader(tables, name, device):
    kd = kdcompress.load(tables[name])
    emb = KdEmbedding.from_kdz(tables[name], device=device)
    assert emb.kind == kd.config["kind"]
    assert (emb.num_embeddings, emb.embedding_dim) == (len(kd), kd.vector_size)
    assert emb.codes.device.type == device
    ids = torch.tensor([[0, 5, 9], [len(kd) - 1, 5, 2]], device=device)
    with torch.no_grad():
        got = emb(ids).cpu().numpy()
    want = kd.vectors(ids)
    assert got.shape == want.shape == (2, 3, kd.vector_size)
    assert float(np.abs(got - want).max()) < 1e-5
    with torch.no_grad():
        every = emb(torch.arange(len(kd), device=device)).cpu().numpy()
    assert float(np.abs(every - kd.decode_all()).max()) < 1e-5


@pytest.mark.parametrize("name", KINDS)
def test_gradients_reach_the_tables(tables, name):
    emb = KdEmbedding.from_kdz(tables[name])
    assert "codes" in dict(emb.named_buffers())
    assert "codes" not in dict(emb.named_parameters())
    idx = torch.tensor([0, 5, 9, 5])
    emb(idx).pow(2).sum().backward()
    used = emb.codes[idx].long()
    grad = emb.codebooks.grad
    for i in range(emb.num_codebooks):
        for k in set(used[:, i].tolist()):
            assert float(grad[i, k].norm()) > 0.0, (i, k)
    for pname, p in emb.composer.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0.0, pname
    # A step changes the output; the codes stay.
    before_codes = emb.codes.clone()
    with torch.no_grad():
        before = emb(idx).clone()
    torch.optim.SGD(emb.parameters(), lr=0.1).step()
    with torch.no_grad():
        assert not torch.equal(before, emb(idx))
    assert torch.equal(before_codes, emb.codes)


def test_freeze_and_words(tables):
    emb = KdEmbedding.from_kdz(tables["glove"], freeze=True)
    assert not any(p.requires_grad for p in emb.parameters())
    assert emb.index("king") == kdcompress.load(tables["glove"]).index("king")
    assert emb.vocab[:2] == ["the", ","]
    assert emb.source_metadata["method"] == "residual-kmeans"
    with pytest.raises(KeyError, match="did you mean king"):
        emb.index("kingg")
    with pytest.raises(UnknownWordError):
        emb.index("kingg")
    with pytest.raises(ValueError, match="freeze_codes=False"):
        KdEmbedding.from_kdz(tables["glove"], freeze_codes=False)
    # K = 300 needs 9 bits: int16, as in the export.
    assert KdEmbedding.from_kdz(tables["mlp"]).codes.dtype == torch.int16
    assert emb.codes.dtype == torch.uint8


def test_save_from_kdz_loads_as_export(tables, tmp_path):
    emb = KdEmbedding.from_kdz(tables["lstm"])
    path = tmp_path / "lstm.safetensors"
    emb.save_safetensors(str(path))
    back = KdEmbedding.from_safetensors(str(path))
    idx = torch.arange(emb.num_embeddings)
    with torch.no_grad():
        torch.testing.assert_close(back(idx), emb(idx), rtol=0, atol=0)
    assert back.vocab == emb.vocab


def conditioned_by_hand(kd: kdcompress.Kdz) -> np.ndarray:
    """The contract of src/composer.rs in numpy, step by step in d dimensions:
    x_0 = 0, x_i = x_{i-1} + e_{i-1} + W_o relu(W_c e_{i-1} + W_s x_{i-1} + t_{i-1})."""
    t = {name: v.astype(np.float64) for name, v in kd.tensors().items()}
    wc, ws = t["composer.cond.code.weight"], t["composer.cond.sum.weight"]
    step, wo = t["composer.cond.step"], t["composer.cond.out.weight"]
    codes = kd.codes.astype(np.int64)
    x = np.zeros((len(kd), kd.vector_size))
    for i in range(codes.shape[1]):
        e = t["codebooks"][i, codes[:, i]]
        z = np.maximum(e @ wc.T + x @ ws.T + step[i], 0.0)
        x = x + e + z @ wo.T
    return x


def test_conditioned_follows_its_definition(tables):
    kd = kdcompress.load(tables["conditioned"])
    assert kd.config["kind"] == "conditioned"
    want = conditioned_by_hand(kd)
    assert float(np.abs(kd.decode_all() - want).max()) < 1e-5
    emb = KdEmbedding.from_kdz(kd)
    with torch.no_grad():
        got = emb(torch.arange(len(kd))).numpy()
    assert float(np.abs(got - want).max()) < 1e-5
    # The step network changes the vectors: this is not the additive sum.
    codes = kd.codes.astype(np.int64)
    books = kd.tensors()["codebooks"]
    additive = sum(books[i, codes[:, i]] for i in range(codes.shape[1]))
    assert float(np.abs(want - additive).max()) > 0.05


def test_conditioned_without_output_weight_is_the_sum(tables):
    kd = kdcompress.load(tables["conditioned"])
    tensors = {name: torch.from_numpy(v) for name, v in kd.tensors().items()}
    tensors["composer.cond.out.weight"] = torch.zeros_like(tensors["composer.cond.out.weight"])
    codes = torch.from_numpy(kd.codes.astype(np.int64))
    emb = KdEmbedding(codes, kd.config, tensors)
    books = tensors["codebooks"]
    additive = sum(books[i, codes[:, i]] for i in range(codes.shape[1]))
    with torch.no_grad():
        torch.testing.assert_close(emb(torch.arange(len(kd))), additive, rtol=0, atol=1e-6)
    # A fresh layer starts there too, as the trainer does: W_o = 0.
    fresh = KdEmbedding(codes, kd.config)
    assert float(fresh.composer.cond.out.weight.detach().abs().sum()) == 0.0
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(torch.arange(len(kd))), fresh.codebooks[fresh._positions, codes].sum(dim=-2)
        )


def test_conditioned_gradients_reach_every_step(tables):
    emb = KdEmbedding.from_kdz(tables["conditioned"])
    names = {n for n, _ in emb.composer.named_parameters()}
    assert names == {"cond.code.weight", "cond.sum.weight", "cond.step", "cond.out.weight"}
    emb(torch.arange(emb.num_embeddings)).pow(2).sum().backward()
    step_grad = emb.composer.cond.step.grad
    assert step_grad.shape == (emb.num_codebooks, emb.hidden)
    for i in range(emb.num_codebooks):
        assert float(step_grad[i].abs().sum()) > 0.0, i
    for name in ("code", "sum", "out"):
        grad = getattr(emb.composer.cond, name).weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0.0, name
    assert "hidden=8" in repr(emb) and "kind=conditioned" in repr(emb)


def test_conditioned_export_round_trips(tables, bin_path, tmp_path):
    exported = tmp_path / "conditioned.safetensors"
    run(bin_path, "export", tables["conditioned"], "-o", exported)
    from_export = KdEmbedding.from_safetensors(str(exported))
    from_kdz = KdEmbedding.from_kdz(tables["conditioned"])
    assert from_export.config() == from_kdz.config()
    idx = torch.arange(from_kdz.num_embeddings)
    with torch.no_grad():
        torch.testing.assert_close(from_export(idx), from_kdz(idx), rtol=0, atol=0)
    with torch.no_grad():
        from_export.composer.cond.step.add_(0.5)
    saved = tmp_path / "tuned.safetensors"
    from_export.save_safetensors(str(saved))
    back = KdEmbedding.from_safetensors(str(saved))
    with torch.no_grad():
        torch.testing.assert_close(back(idx), from_export(idx), rtol=0, atol=0)
        assert not torch.equal(back(idx), from_kdz(idx))
