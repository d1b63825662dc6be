"""Strata's synthetic Criteo-shaped stream (the MLPerf DLRM-DCNv2 layout: 13 dense
counts, 26 sparse tables with their multi-hot sizes, Zipf-skewed ids and click labels
from a hidden model, so a DLRM can learn) as batches of PyTorch tensors."""

import json

import numpy as np
import torch

from . import _native


class SyntheticCriteo:
    """An endless stream of ``(dense, features, labels)`` batches: ``dense`` (batch, 13)
    raw counts, ``features`` a dict ``"cat_<t>" -> (values, lengths)`` of each table's row
    ids (local to the table), ``labels`` (batch,) of 0 and 1. ``table_rows`` gives each
    table's rows (the MLPerf cardinalities times ``scale``); ``take(n)`` the first n
    batches. The same arguments give the same stream."""

    def __init__(self, batch_size, scale=0.001, zipf=1.05, multi_hot=True, seed=1):
        config = {"scale": scale, "zipf": [zipf], "multi_hot": multi_hot, "seed": seed}
        self._native = _native.Synthetic(json.dumps(config), int(batch_size))
        self.batch_size = int(batch_size)
        self.table_rows = list(self._native.table_rows())
        self.feature_names = [f"cat_{t}" for t in range(len(self.table_rows))]

    def __iter__(self):
        return self

    def __next__(self):
        dense, labels, tables = self._native.next_batch()
        to = lambda b, dtype: torch.from_numpy(np.frombuffer(b, dtype=dtype).copy())  # noqa: E731
        features = {name: (to(v, np.int64), to(n, np.int64)) for name, (v, n) in zip(self.feature_names, tables)}
        return to(dense, np.float32).view(self.batch_size, 13), features, to(labels, np.float32)

    def take(self, n):
        return [next(self) for _ in range(n)]
