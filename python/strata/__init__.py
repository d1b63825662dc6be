"""Strata: tiered embedding tables (GPU HBM / host DRAM / NVMe) inside your PyTorch model.

- ``strata.torch.EmbeddingBagCollection``: a TorchRec-style module whose tables live in
  Strata's tiers, with the optimizer fused into backward (``strata.RowWiseAdagrad``,
  ``strata.SGD``), and ``strata.torch.ReadAhead`` to hand it the next batches early.
- ``strata.simulate``, ``strata.mrc`` and ``strata.plan``: the policy lab and the
  planner, returning rows that ``pandas.DataFrame`` takes as they are.
"""

from dataclasses import dataclass

from .lab import mrc, plan, simulate


@dataclass(frozen=True)
class RowWiseAdagrad:
    """Row-wise Adagrad (FBGEMM's ``EXACT_ROWWISE_ADAGRAD``): one accumulator per row,
    ``acc += mean(g^2)``, ``w -= lr * g / (sqrt(acc) + eps)``."""

    lr: float = 0.01
    eps: float = 1e-8

    def config(self):
        return {"kind": "row_wise_adagrad", "lr": self.lr, "eps": self.eps}


@dataclass(frozen=True)
class SGD:
    """Plain SGD on the rows: ``w -= lr * g``."""

    lr: float = 0.01

    def config(self):
        return {"kind": "sgd", "lr": self.lr}


@dataclass(frozen=True)
class Tiers:
    """Each table's share of rows in the device tier (GPU HBM, or an emulated device in
    host memory where there is no GPU) and in the host tier; the rest live only in the
    table's store (a file in ``table_dir``, or memory)."""

    device: float = 0.0
    host: float = 1.0
    hierarchy: str = "inclusive"


__all__ = ["RowWiseAdagrad", "SGD", "Tiers", "simulate", "mrc", "plan"]
