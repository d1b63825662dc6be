"""A notebook-style policy comparison: replay a skewed key stream through several
eviction policies at several cache sizes, and draw the miss-ratio curves (as a table;
with pandas installed, as a DataFrame).

    python policy_comparison.py --keys 200000
"""

import argparse

import numpy as np

import strata


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keys", type=int, default=200_000)
    p.add_argument("--distinct", type=int, default=20_000)
    args = p.parse_args(argv)

    # A Zipf-like stream with a scan mixed in: where recency-only policies suffer.
    rng = np.random.default_rng(0)
    hot = (rng.zipf(1.1, args.keys) % args.distinct).astype(np.uint64)
    scan = np.arange(args.distinct, args.distinct + args.keys // 10, dtype=np.uint64)
    keys = np.concatenate([hot[: args.keys // 2], scan, hot[args.keys // 2 :]])

    rows = strata.simulate(keys, ["lru", "fifo", "clock", "arc", "s3fifo", "sieve", "wtinylfu", "belady"], [0.01, 0.05, 0.1, 0.2])
    curve = strata.mrc(keys, policies=["lru"], capacities=[0.01, 0.1])
    try:
        import pandas as pd

        table = pd.DataFrame(rows).pivot(index="policy", columns="capacity_fraction", values="miss_ratio")
        print(table.round(4))
    except ImportError:
        print(f"{'policy':<10} " + " ".join(f"{c:>8}" for c in sorted({r['capacity_fraction'] for r in rows})))
        for policy in dict.fromkeys(r["policy"] for r in rows):
            ratios = [r["miss_ratio"] for r in sorted(rows, key=lambda r: r["capacity_fraction"]) if r["policy"] == policy]
            print(f"{policy:<10} " + " ".join(f"{m:8.4f}" for m in ratios))
    print(f"exact LRU curve: {len([p for p in curve if p['method'] == 'stack-distance'])} points")
    return rows, curve


if __name__ == "__main__":
    main()
