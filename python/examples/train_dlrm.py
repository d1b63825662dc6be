"""Train a DLRM written in plain PyTorch whose embedding tables live in Strata's tiers.

The model (examples/dlrm.py) is an ordinary nn.Module; only its embedding bags come from
Strata: strata.torch.EmbeddingBagCollection where TorchRec's would be, with row-wise
Adagrad fused into backward, and ReadAhead handing Strata the next batches early so their
rows are read from the table files while the model works.

    python train_dlrm.py --steps 200 --device 0.02 --host 0.1 --policy lookahead:65536
"""

import argparse
import tempfile
import time

import strata
import strata.torch as st
from dlrm import SmallDlrm, train
from strata.data import SyntheticCriteo


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--scale", type=float, default=0.001, help="of the MLPerf cardinalities")
    p.add_argument("--device", type=float, default=0.02, help="share of each table's rows on the device tier")
    p.add_argument("--host", type=float, default=0.1, help="share of each table's rows in the host tier")
    p.add_argument("--policy", default="lru")
    p.add_argument("--window", type=int, default=4, help="batches read ahead (0 = none)")
    p.add_argument("--table-dir", default=None, help="folder for the table files (default: a temporary one)")
    args = p.parse_args(argv)

    stream = SyntheticCriteo(args.batch, scale=args.scale, seed=1)
    tables = [st.EmbeddingBagConfig(f"t{t}", rows, args.dim, [f]) for t, (rows, f) in enumerate(zip(stream.table_rows, stream.feature_names))]
    with tempfile.TemporaryDirectory() as scratch:
        ebc = st.EmbeddingBagCollection(
            tables,
            tiers=strata.Tiers(device=args.device, host=args.host),
            policy=args.policy,
            window=args.window,
            optimizer=strata.RowWiseAdagrad(lr=0.05),
            table_dir=args.table_dir or scratch,
        )
        model = SmallDlrm(ebc, stream.feature_names, args.dim)
        batches = (next(stream) for _ in range(args.steps))
        read_ahead = (lambda b: st.ReadAhead(b, ebc, features=lambda batch: batch[1])) if args.window else None
        start = time.perf_counter()
        losses = train(model, batches, read_ahead=read_ahead)
        seconds = time.perf_counter() - start
        ebc.flush()
        stats = ebc.stats()
    lookups = sum(s["lookups"] for s in stats.values())
    store = sum(s["bytes_store_to_host"] for s in stats.values())
    first, last = sum(losses[:10]) / min(10, len(losses)), sum(losses[-10:]) / min(10, len(losses))
    print(f"{args.steps} steps in {seconds:.1f} s ({args.steps * args.batch / seconds:.0f} samples/s), {lookups} lookups")
    print(f"loss {first:.4f} (first 10 steps) -> {last:.4f} (last 10); {store / 2**20:.1f} MiB read from the table files")
    return losses


if __name__ == "__main__":
    main()
