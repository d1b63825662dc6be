"""The policy lab and planner from Python: simulate and mrc on a NumPy array (read in
place) and on a trace file give the same rows; LRU's simulated miss ratio equals the
exact stack-distance curve at the same capacity; plan returns one row per set-up."""

import pathlib

import numpy as np
import pytest

import strata

ROOT = pathlib.Path(__file__).resolve().parents[2]


def zipf_keys(n=50_000, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.zipf(1.2, n) % 5000).astype(np.uint64)


def test_simulate_an_array_and_the_same_trace_file(tmp_path):
    keys = zipf_keys()
    rows = strata.simulate(keys, ["lru", "s3fifo", "belady"], [0.05, 200])
    assert len(rows) == 6
    assert {r["policy"] for r in rows} == {"lru", "s3fifo", "belady"}
    assert all(r["requests"] == keys.size for r in rows)
    by = {(r["policy"], r["capacity_rows"]): r["miss_ratio"] for r in rows}
    assert by[("belady", 200)] <= by[("lru", 200)], "Belady is optimal"
    path = tmp_path / "keys.txt"
    path.write_text("\n".join(str(k) for k in keys) + "\n")
    from_file = strata.simulate(path, ["lru", "s3fifo", "belady"], [0.05, 200])
    assert [r["misses"] for r in from_file] == [r["misses"] for r in rows]


def test_mrc_lru_curve_agrees_with_simulated_lru():
    keys = zipf_keys()
    points = strata.mrc(keys, policies=["lru"], capacities=[100, 1000])
    simulated = {p["capacity_rows"]: p["miss_ratio"] for p in points if p["method"] == "simulated"}
    assert simulated[100] > simulated[1000]
    assert strata.simulate(keys, "lru", [100])[0]["miss_ratio"] == simulated[100]
    # The curve from stack distances is exact LRU: replaying LRU at its capacities
    # gives its miss ratios.
    exact = [p for p in points if p["method"] == "stack-distance"]
    assert len(exact) >= 5
    sample = exact[:: max(1, len(exact) // 5)]
    replayed = strata.simulate(keys, "lru", [p["capacity_rows"] for p in sample])
    by_capacity = {r["capacity_rows"]: r["miss_ratio"] for r in replayed}
    for p in sample:
        assert by_capacity[p["capacity_rows"]] == p["miss_ratio"], p


def test_bad_lab_arguments():
    with pytest.raises(ValueError):
        strata.simulate(zipf_keys(), ["nonsense"], [0.1])
    with pytest.raises(TypeError, match="keys must be integers"):
        strata.simulate(np.ones(10, dtype=np.float32), ["lru"], [0.1])
    with pytest.raises(ValueError, match="must not be negative"):
        strata.simulate(np.array([1, -2, 3]), ["lru"], [0.1])


def test_plan_returns_rows(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config names its profiles relative to the checkout
    rows = strata.plan("configs/plan.toml")
    assert rows and all("policy" in r and "samples_per_sec" in r for r in rows)
