"""Strata's EmbeddingBagCollection against FBGEMM's CPU TBE
(``SplitTableBatchedEmbeddingBagsCodegen``, every table in host memory, fused
``EXACT_ROWWISE_ADAGRAD``), both starting from the same rows: pooled outputs and final
rows equal within a relative 1e-5 (FBGEMM's kernels fuse multiply-adds and sum in their
own order, so equal bits are not expected; a row-wise Adagrad step that went wrong
differs by far more), over several steps, tables of three dims, sum and mean pooling and
per-sample weights. FP16 rows (``weights_precision=FP16``, rounded to nearest after each
update by both) are held to 2 units in the last place of a half: one update computed
in another order can round the other way. ``make test`` installs fbgemm-gpu-cpu 1.6.0
into the torch venv."""

import logging

import pytest
import torch

import strata
import strata.torch as st

logging.disable(logging.WARNING)  # fbgemm_gpu warns that its compat table lacks torch 2.11
fbgemm = pytest.importorskip("fbgemm_gpu")
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode  # noqa: E402
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (  # noqa: E402
    ComputeDevice,
    OptimType,
    SparseType,
    SplitTableBatchedEmbeddingBagsCodegen,
)

logging.disable(logging.NOTSET)

SHAPES = [("t0", 500, 8), ("t1", 2000, 32), ("t2", 120, 64)]
LR, EPS, BATCH, STEPS = 0.05, 1e-8, 64, 8
TOLERANCE = {"fp32": dict(rtol=1e-5, atol=1e-7), "fp16": dict(rtol=2e-3, atol=1e-4)}


@pytest.mark.parametrize(
    "pooling,weighted,precision", [("sum", False, "fp32"), ("mean", False, "fp32"), ("sum", True, "fp32"), ("sum", True, "fp16")]
)
def test_matches_fbgemm_cpu_tbe(pooling, weighted, precision):
    tolerance = TOLERANCE[precision]
    strata_ebc = st.EmbeddingBagCollection(
        [st.EmbeddingBagConfig(n, r, d, [f"f_{n}"], pooling=pooling, data_type=precision) for n, r, d in SHAPES],
        tiers=strata.Tiers(device=0.02, host=0.1),
        optimizer=strata.RowWiseAdagrad(lr=LR, eps=EPS),
        seed=1,
    )
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(r, d, EmbeddingLocation.HOST, ComputeDevice.CPU) for _, r, d in SHAPES],
        optimizer=OptimType.EXACT_ROWWISE_ADAGRAD,
        learning_rate=LR,
        eps=EPS,
        pooling_mode=PoolingMode.SUM if pooling == "sum" else PoolingMode.MEAN,
        weights_precision=SparseType.FP32 if precision == "fp32" else SparseType.FP16,
        output_dtype=SparseType.FP32,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        for (name, _, _), w in zip(SHAPES, tbe.split_embedding_weights()):
            w.copy_(strata_ebc.weights(name))
    generator = torch.Generator().manual_seed(2)
    for _ in range(STEPS):
        features, indices, offsets, weights = {}, [], [0], []
        for name, rows, _ in SHAPES:
            lengths = torch.randint(0, 8, (BATCH,), generator=generator)
            values = (rows * torch.rand(int(lengths.sum()), generator=generator) ** 2).long()
            w = torch.rand(values.numel(), generator=generator) if weighted else None
            features[f"f_{name}"] = st.Bags(values, lengths=lengths, weights=w)
            indices.append(values)
            offsets += (offsets[-1] + lengths.cumsum(0)).tolist()
            weights.append(w)
        pooled = strata_ebc(features)
        theirs = tbe(
            torch.cat(indices),
            torch.tensor(offsets),
            per_sample_weights=torch.cat(weights) if weighted else None,
        )
        ours = torch.cat([pooled[f"f_{n}"] for n, _, _ in SHAPES], dim=1)
        torch.testing.assert_close(ours, theirs.detach(), **tolerance)
        grad = torch.randn(theirs.shape, generator=generator)
        theirs.backward(grad)
        ours.backward(grad)
    for (name, _, _), w in zip(SHAPES, tbe.split_embedding_weights()):
        torch.testing.assert_close(strata_ebc.weights(name), w.float(), **tolerance)
    state = tbe.split_optimizer_states()
    for (name, _, _), s in zip(SHAPES, state):
        torch.testing.assert_close(strata_ebc.rows(name)[1][:, 0], s[0].flatten(), **tolerance)
