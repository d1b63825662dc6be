"""Strata's module where a TorchRec ``EmbeddingBagCollection`` is: built from TorchRec's
``EmbeddingBagConfig``s, fed a ``KeyedJaggedTensor``, returning a ``KeyedTensor`` with the
same keys, dims and values (bit for bit: TorchRec's CPU module pools with PyTorch's
embedding bag, whose sum and mean Strata's match) from the same rows."""

import functools
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


def test_torchrec_init_fields_are_honoured_or_refused_never_ignored():
    def config(**fields):
        return EmbeddingBagConfig(name="t", embedding_dim=4, num_embeddings=50, feature_names=["f"], **fields)

    # weight_init_min = -s, weight_init_max = s: rows uniform in [-s, s), as TorchRec's.
    ours = st.EmbeddingBagCollection([config(weight_init_min=-0.25, weight_init_max=0.25)], optimizer=strata.SGD(0.1))
    rows = ours.weights("t")
    assert rows.abs().max() <= 0.25 and rows.abs().max() > 0.2
    default = st.EmbeddingBagCollection([config()], optimizer=strata.SGD(0.1)).weights("t")
    assert default.abs().max() <= (1 / 50) ** 0.5 and default.abs().max() > 0.1
    uniform = functools.partial(torch.nn.init.uniform_, a=-0.3, b=0.3)
    rows = st.EmbeddingBagCollection([config(init_fn=uniform)], optimizer=strata.SGD(0.1)).weights("t")
    assert rows.abs().max() <= 0.3 and rows.abs().max() > 0.25
    refused = [
        (config(init_fn=torch.nn.init.zeros_), "init_fn .* is not supported"),
        (config(init_fn=functools.partial(torch.nn.init.uniform_, a=0.0, b=0.3)), "weight_init_min = 0.0"),
        (config(data_type=torchrec.DataType.INT8), "data_type INT8: Strata stores rows as FP32, FP16 or BF16"),
        (config(weight_init_min=0.0, weight_init_max=0.1), "weight_init_min = 0.0"),
        (config(weight_init_max=0.1), "weight_init_min = -0.14.*, weight_init_max = 0.1"),
        (config(need_pos=True), "need_pos = True is not supported"),
    ]
    for table, message in refused:
        with pytest.raises(ValueError, match="table `t`: " + message):
            st.EmbeddingBagCollection([table], optimizer=strata.SGD(0.1))
