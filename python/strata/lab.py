"""The policy lab and the planner from Python: each returns a list of dicts, one per
row, which ``pandas.DataFrame(rows)`` takes as it is (pandas is not needed)."""

import json
import os

import numpy as np

from . import _native


def _keys(keys_or_path):
    """(address, length) of a uint64 key array, read in place; or a trace path."""
    if isinstance(keys_or_path, (str, os.PathLike)):
        return None, os.fspath(keys_or_path)
    keys = keys_or_path
    if not isinstance(keys, np.ndarray):
        raise TypeError(f"keys must be a NumPy array or a trace path, not {type(keys).__name__}")
    if keys.dtype != np.uint64:
        if keys.dtype.kind not in "iu":
            raise TypeError(f"keys must be integers, not {keys.dtype}")
        if keys.dtype.kind == "i" and keys.size and keys.min() < 0:
            raise ValueError("keys must not be negative")
        keys = keys.astype(np.uint64)  # a copy only when the dtype differs
    if keys.ndim != 1:
        raise ValueError(f"keys must be one-dimensional, not of shape {keys.shape}")
    keys = np.ascontiguousarray(keys)
    return keys, None


def _run(keys_or_path, policies, capacities, mrc_rate, admission, threads):
    keys, path = _keys(keys_or_path)
    if isinstance(policies, str):
        policies = [policies]
    address = None if keys is None else (keys.ctypes.data, keys.size)
    text = _native.simulate(
        address,
        path,
        list(policies),
        [float(c) for c in capacities],
        mrc_rate,
        None if admission is None else json.dumps(admission),
        threads,
    )
    del keys  # held until here: the engine read it in place
    return json.loads(text)


def simulate(keys_or_path, policies, capacities, admission=None, threads=0):
    """Replays a trace through every policy at every capacity.

    ``keys_or_path``: a one-dimensional NumPy array of keys (uint64 arrays are read in
    place, without a copy) or a trace file (text, oracleGeneral or Criteo TSV).
    ``policies``: names as ``strata simulate --policies`` takes them (``"lru"``,
    ``"s3fifo"``, ``"belady"``, ...). ``capacities``: below 1 a fraction of the distinct
    keys, from 1 a number of rows. Returns one dict per (policy, capacity): ``policy``,
    ``capacity_rows``, ``capacity_fraction``, ``requests``, ``misses``, ``miss_ratio``,
    ``evictions``, ``seconds``, ``requests_per_sec``.
    """
    return _run(keys_or_path, policies, capacities, None, admission, threads)["results"]


def mrc(keys_or_path, policies=("lru",), capacities=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5), sample_rate=1.0, threads=0):
    """Miss-ratio curves: each policy simulated at ``capacities``, plus the LRU curve from
    stack distances in the same pass (exact, or SHARDS-sampled at ``sample_rate``).
    Returns one dict per point: ``policy``, ``method``, ``capacity_rows``, ``miss_ratio``.
    """
    report = _run(keys_or_path, policies, capacities, sample_rate, None, threads)
    return [
        {"policy": c["policy"], "method": c["method"], "capacity_rows": p["capacity_rows"], "miss_ratio": p["miss_ratio"]}
        for c in report["curves"]
        for p in c["points"]
    ]


def plan(config_path):
    """Runs ``strata plan`` on a plan config file (see configs/README.md). Returns one dict
    per set-up considered (hardware, policy, tier sizes, cost, predicted throughput,
    whether it meets the target and is on the cost/throughput Pareto front)."""
    report = json.loads(_native.plan(os.fspath(config_path)))
    rows = []
    for row in report["rows"]:
        flat = {k: v for k, v in row.items() if not isinstance(v, dict)}
        for k, v in row.items():
            if isinstance(v, dict):
                flat.update({f"{k}_{kk}": vv for kk, vv in v.items() if not isinstance(vv, (dict, list))})
        rows.append(flat)
    return rows
