"""A serving loop over Strata's tiers: a DLRM (examples/dlrm.py) trained for a few steps,
then scored request by request in eval mode (pure lookups: nothing is written), with the
device and host tiers caching the hot rows and the rest read from the table files.

    python serve.py --requests 500 --batch 32 --host 0.05
"""

import argparse
import tempfile
import time

import torch

import strata
import strata.torch as st
from dlrm import SmallDlrm, train
from strata.data import SyntheticCriteo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-steps", type=int, default=50)
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--batch", type=int, default=32, help="samples per request")
    p.add_argument("--scale", type=float, default=0.001)
    p.add_argument("--device", type=float, default=0.01)
    p.add_argument("--host", type=float, default=0.05)
    p.add_argument("--policy", default="s3fifo")
    args = p.parse_args(argv)

    dim = 16
    stream = SyntheticCriteo(args.batch, scale=args.scale, seed=2)
    tables = [st.EmbeddingBagConfig(f"t{t}", rows, dim, [f]) for t, (rows, f) in enumerate(zip(stream.table_rows, stream.feature_names))]
    with tempfile.TemporaryDirectory() as table_dir:
        ebc = st.EmbeddingBagCollection(tables, tiers=strata.Tiers(device=args.device, host=args.host), policy=args.policy, table_dir=table_dir)
        model = SmallDlrm(ebc, stream.feature_names, dim)
        train(model, stream.take(args.train_steps))
        model.eval()
        latencies, scores = [], []
        with torch.no_grad():
            for _ in range(args.requests):
                dense, features, _ = next(stream)
                start = time.perf_counter()
                scores.append(torch.sigmoid(model(dense, features)))
                latencies.append(time.perf_counter() - start)
        stats = ebc.stats()
    latencies.sort()
    pct = lambda q: 1e3 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    hits = sum(s["host"]["hits"] for s in stats.values() if s.get("host"))
    print(f"{args.requests} requests of {args.batch}: p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms; host hits {hits}")
    return torch.cat(scores), stats


if __name__ == "__main__":
    main()
