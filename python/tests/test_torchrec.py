"""Strata's module where a TorchRec ``EmbeddingBagCollection`` is: built from TorchRec's
``EmbeddingBagConfig``s, fed a ``KeyedJaggedTensor``, returning a ``KeyedTensor`` with the
same keys, dims and values (bit for bit: TorchRec's CPU module pools with PyTorch's
embedding bag, whose sum and mean Strata's match) from the same rows."""

import logging

import pytest
import torch

import strata
import strata.torch as st

logging.disable(logging.WARNING)
torchrec = pytest.importorskip("torchrec")
logging.disable(logging.NOTSET)
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType  # noqa: E402


def test_a_keyed_jagged_tensor_in_and_a_keyed_tensor_out_as_torchrec():
    configs = [
        EmbeddingBagConfig(name="users", embedding_dim=8, num_embeddings=300, feature_names=["user", "friend"], pooling=PoolingType.SUM),
        EmbeddingBagConfig(name="products", embedding_dim=16, num_embeddings=1000, feature_names=["item"], pooling=PoolingType.MEAN),
    ]
    theirs = EmbeddingBagCollection(tables=configs, device=torch.device("cpu"))
    ours = st.EmbeddingBagCollection(configs, tiers=strata.Tiers(device=0.05, host=0.2), optimizer=strata.SGD(0.1))
    with torch.no_grad():
        for c in configs:
            theirs.embedding_bags[c.name].weight.copy_(ours.weights(c.name))
    generator = torch.Generator().manual_seed(8)
    for _ in range(5):
        lengths = torch.randint(0, 5, (3 * 16,), generator=generator)
        rows = torch.tensor([300] * 32 + [1000] * 16).repeat_interleave(lengths)
        values = (torch.rand(int(lengths.sum()), generator=generator) * rows).long()
        kjt = KeyedJaggedTensor.from_lengths_sync(keys=["user", "friend", "item"], values=values, lengths=lengths)
        want, got = theirs(kjt), ours.eval()(kjt)
        assert type(got).__name__ == "KeyedTensor"
        assert got.keys() == want.keys() and got.length_per_key() == want.length_per_key()
        assert torch.equal(got.values(), want.values().detach())
        for key in ["user", "friend", "item"]:
            assert torch.equal(got[key], want[key].detach())
