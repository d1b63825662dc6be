"""A small DLRM in plain PyTorch, trained on Strata's synthetic Criteo-shaped stream with
its embedding bags in Strata: through device 2% + host 10% tiers (LRU, and lookahead
Belady fed by ReadAhead) it gives bit-identical losses and final rows to the same model
with every row in host memory."""

import pytest
import torch

import strata
import strata.torch as st
from dlrm import SmallDlrm, train
from strata.data import SyntheticCriteo

DIM, BATCH, STEPS = 16, 64, 25


def run(tiers, policy="lru", window=0, table_dir=None):
    stream = SyntheticCriteo(BATCH, scale=0.0005, seed=3)
    tables = [st.EmbeddingBagConfig(f"t{t}", rows, DIM, [f]) for t, (rows, f) in enumerate(zip(stream.table_rows, stream.feature_names))]
    ebc = st.EmbeddingBagCollection(tables, tiers=tiers, policy=policy, window=window, optimizer=strata.RowWiseAdagrad(0.05), table_dir=table_dir)
    model = SmallDlrm(ebc, stream.feature_names, DIM, seed=4)
    read_ahead = (lambda b: st.ReadAhead(b, ebc, features=lambda batch: batch[1])) if window else None
    losses = train(model, stream.take(STEPS), read_ahead=read_ahead)
    return losses, ebc, model


def test_tiered_training_matches_all_in_host(tmp_path):
    reference, ref_ebc, ref_model = run(strata.Tiers(device=0.0, host=1.0))
    assert reference[-1] < reference[0], "the model learns"
    for policy, window in [("lru", 0), ("lookahead:4096", 4)]:
        losses, ebc, model = run(strata.Tiers(device=0.02, host=0.1), policy, window, tmp_path / policy.replace(":", "-"))
        assert losses == reference, f"{policy}: losses differ"
        stats = ebc.stats()
        assert sum(s["bytes_store_to_host"] for s in stats.values()) > 0, "rows came from the table files"
        for t in ["t0", "t9", "t20"]:
            assert torch.equal(ebc.weights(t), ref_ebc.weights(t)), f"{policy}: table {t} differs"
        for p, q in zip(model.parameters(), ref_model.parameters()):
            assert torch.equal(p, q)
