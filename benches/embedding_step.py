#!/usr/bin/env python3
"""The embedding step from PyTorch, timed: forward + backward with the fused
EXACT_ROWWISE_ADAGRAD update, every table in host memory, one thread, in one of two
modules (`--impl`):

- `fbgemm`: FBGEMM's `SplitTableBatchedEmbeddingBagsCodegen` (EmbeddingLocation.HOST,
  ComputeDevice.CPU), its tables' dims as given, one pooling for all of them (FBGEMM's
  TBE pools every table alike), `per_sample_weights` when any table is weighted (1.0 for
  the lookups of the unweighted ones);
- `strata`: `strata.torch.EmbeddingBagCollection` with every row in its host tier
  (Tiers(device=0, host=1)), one feature per table, each table its own pooling and
  weights, its dict output (written in place by the engine).

Installs nothing: run it with a Python that has torch and fbgemm-gpu-cpu (for torch
2.11.0, fbgemm-gpu-cpu 1.6.0) or strata (`make bench-fbgemm` installs both into the
torch venv).

The batches either come from `--indices FILE` (what `strata bench embedding` writes,
so both sides do exactly the same lookups) or are generated here from `--seed`
(Zipf over a fixed random permutation of each table's rows, or uniform).

FILE holds the batches one after another, little-endian int64: the T*B+1 offsets of a
batch (table-major bags, as FBGEMM takes them, offsets[0] = 0), then its offsets[-1]
indices (rows within their table). `--weights WFILE` holds, batch after batch, one
little-endian float32 weight per index (what `strata bench embedding` writes when a
table is weighted); without it, generated batches of weighted tables get weights drawn
from `--seed`.

Prints one JSON object on stdout.
"""

import argparse
import gc
import json
import platform
import sys
import time
import warnings


def per_table(p, name, text, tables, convert):
    """A comma-separated option with one value for every table, or one per table."""
    values = [convert(v) for v in str(text).split(",") if v.strip()]
    if len(values) == 1:
        values = values * tables
    if len(values) != tables:
        p.error(f"--{name}: give 1 or {tables} values, got {len(values)}")
    return values


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["fbgemm", "strata"], default="fbgemm")
    p.add_argument("--rows", required=True, help="comma-separated rows per table")
    p.add_argument("--dim", default="128", help="embedding dim: one for every table, or one per table")
    p.add_argument("--pooling", default="sum", help="sum or mean: one for every table, or one per table")
    p.add_argument("--weighted", default="0", help="1 where a table's bags are weighted: one for every table, or one per table")
    p.add_argument("--batch", type=int, default=2048, help="samples per step (B)")
    p.add_argument("--bag", default="1", help="lookups per bag: one L for every table, or one per table")
    p.add_argument("--dist", choices=["zipf", "uniform"], default="zipf")
    p.add_argument("--alpha", type=float, default=1.05, help="Zipf exponent")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    p.add_argument("--indices", help="read the batches from this file instead of generating them")
    p.add_argument("--weights", help="with --indices: the batches' weights (see above)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--precision",
        choices=["fp32", "fp16"],
        default="fp32",
        help="how the rows store their values: FBGEMM's weights_precision, Strata's data_type (both round to nearest)",
    )
    args = p.parse_args(argv)
    args.rows = [int(r) for r in args.rows.split(",") if r.strip()]
    T = len(args.rows)
    args.bag = per_table(p, "bag", args.bag, T, int)
    args.dim = per_table(p, "dim", args.dim, T, int)
    args.pooling = per_table(p, "pooling", args.pooling, T, str.strip)
    args.weighted = per_table(p, "weighted", args.weighted, T, lambda v: v.strip() in ("1", "true"))
    if not args.rows or min(args.rows) < 1 or min(args.bag) < 1 or min(args.dim) < 1 or args.batch < 1 or args.iters < 1:
        p.error("rows, dims, bag sizes, batch and iters must be positive")
    if any(pool not in ("sum", "mean") for pool in args.pooling):
        p.error(f"--pooling: sum or mean, not {args.pooling}")
    if args.impl == "fbgemm" and len(set(args.pooling)) > 1:
        p.error("--impl fbgemm: FBGEMM's TBE pools every table alike; give one --pooling")
    if args.weights and not args.indices:
        p.error("--weights goes with --indices")
    return args


def generate(args, np):
    """`args.batches` batches of table-major bags: (offsets, indices, weights) as int64,
    int64 and float32 (or None) arrays."""
    rng = np.random.default_rng(args.seed)
    samplers = []
    for rows in args.rows:
        if args.dist == "zipf":
            cdf = np.cumsum(1.0 / np.arange(1, rows + 1, dtype=np.float64) ** args.alpha)
            cdf /= cdf[-1]
            samplers.append((cdf, rng.permutation(rows)))
        else:
            samplers.append((None, None))
    out = []
    for _ in range(args.batches):
        lengths, parts, weights = [], [], []
        for rows, bag, (cdf, perm), weighted in zip(args.rows, args.bag, samplers, args.weighted):
            n = args.batch * bag
            if cdf is None:
                parts.append(rng.integers(0, rows, size=n, dtype=np.int64))
            else:
                ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), rows - 1)
                parts.append(perm[ranks].astype(np.int64))
            lengths.append(np.full(args.batch, bag, dtype=np.int64))
            weights.append((0.5 + rng.random(n)).astype(np.float32) if weighted else np.ones(n, dtype=np.float32))
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        out.append((offsets, np.concatenate(parts), np.concatenate(weights) if any(args.weighted) else None))
    return out


def read_indices(path, tables, batch, np):
    """The batches of an indices file (see the module doc), without weights."""
    data = np.fromfile(path, dtype="<i8")
    bags = tables * batch
    out, at = [], 0
    while at < len(data):
        if at + bags + 1 > len(data):
            raise ValueError(f"{path}: truncated offsets at int64 {at}")
        offsets = data[at : at + bags + 1]
        at += bags + 1
        n = int(offsets[-1])
        if offsets[0] != 0 or n < 0 or at + n > len(data) or np.any(np.diff(offsets) < 0):
            raise ValueError(f"{path}: bad offsets at int64 {at - bags - 1}")
        out.append((offsets.copy(), data[at : at + n].copy(), None))
        at += n
    if not out:
        raise ValueError(f"{path}: no batches")
    return out


def read_weights(path, batches, np):
    """`batches` with the weights of a weights file (one float32 per index) added."""
    data = np.fromfile(path, dtype="<f4")
    out, at = [], 0
    for k, (offsets, indices, _) in enumerate(batches):
        n = len(indices)
        if at + n > len(data):
            raise ValueError(f"{path}: truncated at float32 {at} (batch {k} needs {n})")
        out.append((offsets, indices, data[at : at + n].copy()))
        at += n
    if at != len(data):
        raise ValueError(f"{path}: {len(data) - at} float32 beyond the batches' indices")
    return out


def distinct_rows(offsets, indices, rows, batch):
    """Distinct (table, row) pairs of one batch: the rows the optimizer updates."""
    import numpy as np

    total = 0
    for t, r in enumerate(rows):
        seg = indices[offsets[t * batch] : offsets[(t + 1) * batch]]
        if len(seg) and (seg.min() < 0 or seg.max() >= r):
            raise ValueError(f"table {t}: index out of range [0, {r})")
        total += len(np.unique(seg))
    return total


def fbgemm_module(args, torch):
    """FBGEMM's TBE over the tables, and a step's inputs from one batch."""
    import fbgemm_gpu
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        OptimType,
        SparseType,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    emb = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(r, d, EmbeddingLocation.HOST, ComputeDevice.CPU) for r, d in zip(args.rows, args.dim)],
        optimizer=OptimType.EXACT_ROWWISE_ADAGRAD,
        learning_rate=args.lr,
        eps=args.eps,
        pooling_mode=PoolingMode.MEAN if args.pooling[0] == "mean" else PoolingMode.SUM,
        weights_precision=SparseType.FP32 if args.precision == "fp32" else SparseType.FP16,
        output_dtype=SparseType.FP32,
        device=torch.device("cpu"),
    )

    def inputs(offsets, indices, weights):
        extra = {} if weights is None else {"per_sample_weights": torch.from_numpy(weights)}
        return (torch.from_numpy(indices), torch.from_numpy(offsets)), extra

    def step(inputs, grad):
        positional, keywords = inputs
        out = emb(*positional, **keywords)
        return out, lambda: out.backward(grad)  # the fused row-wise Adagrad update happens here

    name = f"fbgemm SplitTableBatchedEmbeddingBagsCodegen (CPU, HOST, EXACT_ROWWISE_ADAGRAD, {args.pooling[0].upper()}, {args.precision.upper()})"
    grads = torch.full((args.batch, sum(args.dim)), 0.01, dtype=torch.float32)
    return name, inputs, step, grads, {"fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "unknown")}


def strata_module(args, torch):
    """Strata's module over the tables (every row in its host tier), and a step's inputs
    from one batch."""
    import importlib.metadata

    import strata
    import strata.torch as st

    T, B = len(args.rows), args.batch
    tables = [
        st.EmbeddingBagConfig(f"t{t}", r, d, [f"f{t}"], pooling=pool, data_type=args.precision)
        for t, (r, d, pool) in enumerate(zip(args.rows, args.dim, args.pooling))
    ]
    ebc = st.EmbeddingBagCollection(
        tables, tiers=strata.Tiers(device=0.0, host=1.0), policy="lru", optimizer=strata.RowWiseAdagrad(lr=args.lr, eps=args.eps), seed=args.seed
    )

    def inputs(offsets, indices, weights):
        features = {}
        for t in range(T):
            lo, hi = int(offsets[t * B]), int(offsets[(t + 1) * B])
            w = None if weights is None or not args.weighted[t] else torch.from_numpy(weights[lo:hi])
            features[f"f{t}"] = st.Bags(torch.from_numpy(indices[lo:hi]), offsets=torch.from_numpy(offsets[t * B : (t + 1) * B + 1] - lo), weights=w)
        return features

    def step(features, grads):
        out = ebc(features)
        return out, lambda: torch.autograd.backward(list(out.values()), grads)  # the fused update

    grads = [torch.full((B, d), 0.01, dtype=torch.float32) for d in args.dim]
    return f"strata.torch EmbeddingBagCollection (host tier, RowWiseAdagrad, {args.precision.upper()})", inputs, step, grads, {"strata": importlib.metadata.version("strata")}


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)  # fbgemm_gpu warns about its torch compat table
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    T, B = len(args.rows), args.batch
    if args.indices:
        batches = read_indices(args.indices, T, B, np)
        if args.weights:
            batches = read_weights(args.weights, batches, np)
        elif any(args.weighted):
            raise SystemExit("--weighted tables with --indices need --weights")
        source = "file"
    else:
        batches = generate(args, np)
        source = f"{args.dist}(seed={args.seed}" + (f", alpha={args.alpha})" if args.dist == "zipf" else ")")
    lookups = [int(o[-1]) for o, _, _ in batches]
    distinct = [distinct_rows(o, i, args.rows, B) for o, i, _ in batches]

    build = fbgemm_module if args.impl == "fbgemm" else strata_module
    name, inputs, step_of, grads, versions = build(args, torch)
    tensors = [inputs(o, i, w) for o, i, w in batches]

    def step(k):
        """One forward + backward; returns the seconds the forward took."""
        t0 = time.perf_counter()
        _, backward = step_of(tensors[k % len(tensors)], grads)
        t1 = time.perf_counter()
        backward()
        return t1 - t0

    # Every batch once before timing, so each side's rows are where a long run keeps
    # them (Strata's host tier has read them from its store).
    for k in range(max(args.warmup, len(tensors))):
        step(k)
    # As timeit does: no cyclic garbage collection inside the timed steps (Strata has
    # none to pay for either).
    gc.collect()
    gc.disable()
    times, forward = [], 0.0
    done = 0
    # CPU seconds of every thread of the process: less disturbed by other work on a
    # shared machine than wall time, and it would show any thread beyond the one asked.
    cpu = time.process_time()
    first = max(args.warmup, len(tensors))
    for k in range(args.iters):
        b = (first + k) % len(tensors)
        t0 = time.perf_counter()
        forward += step(b)
        times.append(time.perf_counter() - t0)
        done += lookups[b]
    cpu = time.process_time() - cpu
    gc.enable()
    total = sum(times)
    result = {
        "impl": name,
        "tables": T,
        "rows": args.rows,
        "dim": args.dim,
        "pooling": args.pooling,
        "weighted": args.weighted,
        "batch": B,
        "precision": args.precision,
        "bag": args.bag,
        "indices": source,
        "batches": len(batches),
        "warmup": args.warmup,
        "iters": args.iters,
        "threads": torch.get_num_threads(),
        "lookups_per_step": sum(lookups) / len(lookups),
        "distinct_rows_per_step": sum(distinct) / len(distinct),
        "lookups_per_batch": lookups,
        "distinct_rows_per_batch": distinct,
        "seconds_per_step": total / len(times),
        "forward_seconds_per_step": forward / len(times),
        "cpu_seconds_per_step": cpu / len(times),
        "seconds_per_step_min": min(times),
        "seconds_per_step_median": sorted(times)[len(times) // 2],
        "lookups_per_sec": done / total,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, **versions},
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
