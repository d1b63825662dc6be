#!/usr/bin/env python3
"""Replays a trace through libCacheSim (PyPI `libcachesim`) and prints JSON results.

Usage: libcachesim_replay.py TRACE FORMAT CAPACITY_ROWS POLICY [POLICY ...]

FORMAT is `oracle-general` or `txt`; every object has size 1, so the cache size is a
number of rows. Each policy is timed over `process_trace`, which reads the trace
itself. Policy names are Strata's (lru, fifo, clock, lfu, arc, s3fifo, sieve, tinylfu,
belady, and lfu:0 = LFU without aging); S3-FIFO runs with small queue 10%, ghost 90%, move-to-main threshold 2.
"""
import json
import sys
import time

import libcachesim as lcs

POLICIES = {
    "lru": lambda c: lcs.LRU(c),
    "fifo": lambda c: lcs.FIFO(c),
    "clock": lambda c: lcs.Clock(c),
    "lfu:0": lambda c: lcs.LFU(c),  # Strata's `lfu` ages counts; `lfu:0` does not, like libCacheSim's
    "arc": lambda c: lcs.ARC(c),
    "s3fifo": lambda c: lcs.S3FIFO(c, small_size_ratio=0.1, ghost_size_ratio=0.9, move_to_main_threshold=2),
    "sieve": lambda c: lcs.Sieve(c),
    "tinylfu": lambda c: lcs.WTinyLFU(c, window_size=0.01),
    "belady": lambda c: lcs.Belady(c),
}

TRACE_TYPES = {
    "oracle-general": lcs.TraceType.ORACLE_GENERAL_TRACE,
    "txt": lcs.TraceType.PLAIN_TXT_TRACE,
}


def main(argv):
    if len(argv) < 5:
        sys.exit(__doc__)
    path, fmt, capacity, names = argv[1], argv[2], int(argv[3]), argv[4:]
    if fmt not in TRACE_TYPES:
        sys.exit(f"unknown trace format {fmt!r}; expected one of {sorted(TRACE_TYPES)}")
    params = lcs.ReaderInitParam()
    if fmt == "txt":
        params.obj_id_is_num = True
    reader = lcs.TraceReader(path, TRACE_TYPES[fmt], params)
    requests = reader.get_num_of_req()
    results = []
    for name in names:
        if name not in POLICIES:
            sys.exit(f"libCacheSim has no policy {name!r} here; expected one of {sorted(POLICIES)}")
        cache = POLICIES[name](capacity)
        start = time.perf_counter()
        miss_ratio, _ = cache.process_trace(reader)
        seconds = time.perf_counter() - start
        results.append({
            "policy": name,
            "capacity_rows": capacity,
            "requests": requests,
            "misses": round(miss_ratio * requests),
            "miss_ratio": miss_ratio,
            "seconds": seconds,
            "requests_per_sec": requests / seconds,
        })
    json.dump({"tool": "libcachesim", "version": lcs.__version__, "results": results}, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv)
