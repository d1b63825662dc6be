"""Train a DLRM written in plain PyTorch whose embedding tables live in Strata's tiers.

The model (examples/dlrm.py) is an ordinary nn.Module; only its embedding bags come from
Strata: strata.torch.EmbeddingBagCollection where TorchRec's would be, with row-wise
Adagrad fused into backward, and ReadAhead handing Strata the next batches early so their
rows are read from the table files while the model works.

    python train_dlrm.py --steps 200 --device 0.02 --host 0.1 --policy lookahead:65536

With --compare, the same model trains twice on the same batches, first with every row in
host memory, then through the tiers given, and prints both set-ups' samples/s, their
ratio and whether the losses are identical (they must be: tiering never changes a value).
"""

import argparse
import json
import tempfile
import time

import strata
import strata.torch as st
from dlrm import SmallDlrm, train
from strata.data import SyntheticCriteo


def run(args, stream, batches, tiers, policy, window, table_dir):
    """Trains a fresh model over ``batches`` through ``tiers``; returns (losses, seconds,
    stats)."""
    tables = [st.EmbeddingBagConfig(f"t{t}", rows, args.dim, [f]) for t, (rows, f) in enumerate(zip(stream.table_rows, stream.feature_names))]
    ebc = st.EmbeddingBagCollection(
        tables, tiers=tiers, policy=policy, window=window, optimizer=strata.RowWiseAdagrad(lr=0.05), table_dir=table_dir, write_buffer=args.write_buffer
    )
    model = SmallDlrm(ebc, stream.feature_names, args.dim, bottom=args.bottom_mlp, top=args.top_mlp)
    read_ahead = (lambda b: st.ReadAhead(b, ebc, features=lambda batch: batch[1])) if window else None
    start = time.perf_counter()
    losses = train(model, batches, read_ahead=read_ahead)
    seconds = time.perf_counter() - start
    ebc.flush()
    return losses, seconds, ebc.stats()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--scale", type=float, default=0.001, help="of the MLPerf cardinalities")
    widths = lambda text: tuple(int(w) for w in text.split(",") if w)  # noqa: E731
    p.add_argument("--bottom-mlp", type=widths, default=(32,), help="hidden widths of the bottom MLP (MLPerf's: 512,256)")
    p.add_argument("--top-mlp", type=widths, default=(32,), help="hidden widths of the top MLP (MLPerf's: 1024,1024,512,256)")
    p.add_argument("--device", type=float, default=0.02, help="share of each table group's rows on the device tier")
    p.add_argument("--host", type=float, default=0.1, help="share of each table group's rows in the host tier")
    p.add_argument("--policy", default="lru")
    p.add_argument("--window", type=int, default=4, help="batches read ahead (0 = none)")
    p.add_argument("--write-buffer", type=float, default=0.0, help="share of each table group's rows the storage thread may hold dirty")
    p.add_argument("--table-dir", default=None, help="folder for the table files (default: a temporary one)")
    p.add_argument("--compare", action="store_true", help="first train with every row in host memory, on the same batches")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = p.parse_args(argv)

    stream = SyntheticCriteo(args.batch, scale=args.scale, seed=1)
    # Generated before timing, so each set-up times training only.
    batches = stream.take(args.steps)
    report = {
        "steps": args.steps,
        "batch": args.batch,
        "dim": args.dim,
        "scale": args.scale,
        "rows": sum(stream.table_rows),
        "bottom_mlp": args.bottom_mlp,
        "top_mlp": args.top_mlp,
    }
    if args.compare:
        losses, seconds, _ = run(args, stream, batches, strata.Tiers(device=0.0, host=1.0), "lru", 0, None)
        report["all_in_host"] = {"seconds": seconds, "samples_per_sec": args.steps * args.batch / seconds}
        host_losses = losses
    with tempfile.TemporaryDirectory() as scratch:
        tiers = strata.Tiers(device=args.device, host=args.host)
        losses, seconds, stats = run(args, stream, batches, tiers, args.policy, args.window, args.table_dir or scratch)
    tiered = f"device {args.device:g} + host {args.host:g}, {args.policy}, read-ahead {args.window}"
    report["tiered"] = {
        "setup": tiered,
        "seconds": seconds,
        "samples_per_sec": args.steps * args.batch / seconds,
        "lookups": sum(s["lookups"] for s in stats.values()),
        "store_mib": sum(s["bytes_store_to_host"] for s in stats.values()) / 2**20,
        "store_rows_read": sum(s["host"]["misses"] for s in stats.values() if s.get("host")),
        "store_rows_written": sum(s["store_writes"] for s in stats.values()),
        "store_read_seconds": sum(s["store_read_seconds"] for s in stats.values()),
        "store_write_seconds": sum(s["storage_thread"]["write_seconds"] for s in stats.values()),
    }
    if args.compare:
        report["tiered_vs_all_in_host"] = report["tiered"]["samples_per_sec"] / report["all_in_host"]["samples_per_sec"]
        report["losses_identical"] = losses == host_losses
    first, last = sum(losses[:10]) / min(10, len(losses)), sum(losses[-10:]) / min(10, len(losses))
    if args.json:
        print(json.dumps(report))
        return losses
    if args.compare:
        print(f"all in host memory: {report['all_in_host']['samples_per_sec']:.0f} samples/s")
    print(f"{tiered}: {args.steps} steps in {seconds:.1f} s ({report['tiered']['samples_per_sec']:.0f} samples/s), {report['tiered']['lookups']} lookups")
    print(f"loss {first:.4f} (first 10 steps) -> {last:.4f} (last 10); {report['tiered']['store_mib']:.1f} MiB read from the table files")
    t = report["tiered"]
    print(
        f"store: {t['store_rows_read']} rows read in {t['store_read_seconds']:.1f} s, "
        f"{t['store_rows_written']} written back in {t['store_write_seconds']:.1f} s (the storage thread's busy time)"
    )
    if args.compare:
        same = "identical" if report["losses_identical"] else "DIFFERENT"
        print(f"tiered / all in host: {report['tiered_vs_all_in_host']:.3f}; losses {same}")
    return losses


if __name__ == "__main__":
    main()
