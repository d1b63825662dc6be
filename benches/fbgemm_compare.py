#!/usr/bin/env python3
"""FBGEMM's CPU embedding step, timed: `SplitTableBatchedEmbeddingBagsCodegen` with
every table in host memory (EmbeddingLocation.HOST, ComputeDevice.CPU), SUM pooling and
the fused EXACT_ROWWISE_ADAGRAD update, forward + backward per step, one thread.

Installs nothing: run it with a Python that has torch and fbgemm-gpu-cpu (for torch
2.11.0, fbgemm-gpu-cpu 1.6.0; `make bench-fbgemm` installs it into the torch venv).

The batches either come from `--indices FILE` (what `strata bench embedding` writes,
so both sides do exactly the same lookups) or are generated here from `--seed`
(Zipf over a fixed random permutation of each table's rows, or uniform).

FILE holds the batches one after another, little-endian int64: the T*B+1 offsets of a
batch (table-major bags, as FBGEMM takes them, offsets[0] = 0), then its offsets[-1]
indices (rows within their table).

Prints one JSON object on stdout.
"""

import argparse
import gc
import json
import platform
import sys
import time
import warnings


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", required=True, help="comma-separated rows per table")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=2048, help="samples per step (B)")
    p.add_argument("--bag", default="1", help="lookups per bag: one L for every table, or one per table")
    p.add_argument("--dist", choices=["zipf", "uniform"], default="zipf")
    p.add_argument("--alpha", type=float, default=1.05, help="Zipf exponent")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    p.add_argument("--indices", help="read the batches from this file instead of generating them")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.rows = [int(r) for r in args.rows.split(",") if r.strip()]
    bags = [int(l) for l in args.bag.split(",") if l.strip()]
    if len(bags) == 1:
        bags = bags * len(args.rows)
    if len(bags) != len(args.rows):
        p.error(f"--bag: give 1 or {len(args.rows)} sizes, got {len(bags)}")
    args.bag = bags
    if not args.rows or min(args.rows) < 1 or min(args.bag) < 1 or args.batch < 1 or args.iters < 1:
        p.error("rows, bag sizes, batch and iters must be positive")
    return args


def generate(args, np):
    """`args.batches` batches of table-major bags: (offsets, indices) as int64 arrays."""
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
        lengths, parts = [], []
        for rows, bag, (cdf, perm) in zip(args.rows, args.bag, samplers):
            n = args.batch * bag
            if cdf is None:
                parts.append(rng.integers(0, rows, size=n, dtype=np.int64))
            else:
                ranks = np.minimum(np.searchsorted(cdf, rng.random(n)), rows - 1)
                parts.append(perm[ranks].astype(np.int64))
            lengths.append(np.full(args.batch, bag, dtype=np.int64))
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
        out.append((offsets, np.concatenate(parts)))
    return out


def read_indices(path, tables, batch, np):
    """The batches of an indices file (see the module doc)."""
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
        out.append((offsets.copy(), data[at : at + n].copy()))
        at += n
    if not out:
        raise ValueError(f"{path}: no batches")
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


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)  # fbgemm_gpu warns about its torch compat table
    import numpy as np
    import torch
    import fbgemm_gpu
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice,
        OptimType,
        SparseType,
        SplitTableBatchedEmbeddingBagsCodegen,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    T, B, D = len(args.rows), args.batch, args.dim
    if args.indices:
        batches = read_indices(args.indices, T, B, np)
        source = "file"
    else:
        batches = generate(args, np)
        source = f"{args.dist}(seed={args.seed}" + (f", alpha={args.alpha})" if args.dist == "zipf" else ")")
    lookups = [int(o[-1]) for o, _ in batches]
    distinct = [distinct_rows(o, i, args.rows, B) for o, i in batches]

    emb = SplitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[(r, D, EmbeddingLocation.HOST, ComputeDevice.CPU) for r in args.rows],
        optimizer=OptimType.EXACT_ROWWISE_ADAGRAD,
        learning_rate=args.lr,
        eps=args.eps,
        pooling_mode=PoolingMode.SUM,
        weights_precision=SparseType.FP32,
        device=torch.device("cpu"),
    )
    tensors = [(torch.from_numpy(i), torch.from_numpy(o)) for o, i in batches]
    grad = torch.full((B, T * D), 0.01, dtype=torch.float32)

    def step(k):
        """One forward + backward; returns the seconds the forward took."""
        indices, offsets = tensors[k % len(tensors)]
        t0 = time.perf_counter()
        out = emb(indices, offsets)
        t1 = time.perf_counter()
        out.backward(grad)  # the fused row-wise Adagrad update happens here
        return t1 - t0

    for k in range(args.warmup):
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
    for k in range(args.iters):
        b = (args.warmup + k) % len(tensors)
        t0 = time.perf_counter()
        forward += step(b)
        times.append(time.perf_counter() - t0)
        done += lookups[b]
    cpu = time.process_time() - cpu
    gc.enable()
    total = sum(times)
    result = {
        "impl": "fbgemm SplitTableBatchedEmbeddingBagsCodegen (CPU, HOST, EXACT_ROWWISE_ADAGRAD, SUM)",
        "tables": T,
        "rows": args.rows,
        "dim": D,
        "batch": B,
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
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "unknown"),
            "numpy": np.__version__,
        },
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
