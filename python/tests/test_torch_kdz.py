"""`KdEmbedding.from_kdz`: every composer kind, the reader's vectors, gradients to the tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kdcompress
from kdcompress import UnknownWordError
from kdcompress.torch import KdEmbedding

from conftest import SHAPES

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
