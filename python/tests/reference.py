"""A reference embedding-bag collection in plain PyTorch: every row in one tensor per
table, pooling by ``nn.EmbeddingBag``'s function (by ``index_add_`` for weighted bags,
whose fused multiply-add in PyTorch's kernel rounds differently) and row-wise Adagrad or
SGD in torch ops, each operation in the order Strata's engine does it, so that results
match bit for bit. A table of ``dtype`` f16 or bf16 keeps float32 values that are its
halves, and rounds each updated row to nearest (torch's conversion, ties to even)."""

import torch
import torch.nn.functional as F

_HALF = {"f16": torch.float16, "bf16": torch.bfloat16}


def _divide(a, b):
    # A true division, elementwise (PyTorch turns division by a Python scalar into a
    # multiplication by its reciprocal, which rounds differently).
    return a / torch.full_like(a, b) if not isinstance(b, torch.Tensor) else a / b


def _sqrt(a):
    # The correctly rounded square root (IEEE 754's, as Rust's f32::sqrt): PyTorch's float32
    # sqrt on CPU is not always; through float64 it is (53 bits round a 24-bit root exactly).
    return torch.sqrt(a.double()).float()


class ReferenceCollection:
    def __init__(self, tables, weights, optimizer):
        self.tables = tables
        self.weights = {t["name"]: w.clone() for t, w in zip(tables, weights)}
        self.acc = {t["name"]: torch.zeros(w.shape[0]) for t, w in zip(tables, weights)}
        self.optimizer = optimizer

    def forward(self, features):
        """features: feature -> (values int64, offsets int64 (bags + 1), weights or None)."""
        out, self.saved = {}, {}
        for t in self.tables:
            W = self.weights[t["name"]]
            for f in t["features"]:
                values, offsets, weights = features[f]
                if weights is None:
                    pooled = F.embedding_bag(values, W, offsets[:-1], mode=t["pooling"])
                else:
                    bags = offsets.numel() - 1
                    bag = torch.repeat_interleave(torch.arange(bags), offsets.diff())
                    pooled = torch.zeros(bags, W.shape[1]).index_add_(0, bag, W[values] * weights[:, None])
                    if t["pooling"] == "mean":
                        pooled = _divide(pooled, offsets.diff().clamp(min=1).to(torch.float32)[:, None].expand_as(pooled))
                out[f] = pooled
        self.features = features
        return out

    def backward(self, grads):
        """grads: feature -> gradient of its pooled output. Updates the step's rows."""
        for t in self.tables:
            name, dim = t["name"], t["dim"]
            ids, coef, rows_grad = [], [], []
            for f in t["features"]:
                values, offsets, weights = self.features[f]
                lengths = offsets.diff()
                bag = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
                scale = torch.ones(values.numel())
                if t["pooling"] == "mean":
                    scale = _divide(torch.ones(values.numel()), lengths[bag].to(torch.float32))
                if weights is not None:
                    scale = weights * scale
                ids.append(values)
                rows_grad.append(grads[f][bag] * scale[:, None])
            ids, rows_grad = torch.cat(ids), torch.cat(rows_grad)
            unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
            # Each row's gradient: its lookups' gradients added from zero in lookup order.
            g = torch.zeros(unique.numel(), dim).index_add_(0, inverse, rows_grad)
            W, acc = self.weights[name], self.acc[name]
            narrow = (lambda w: w.to(_HALF[t["dtype"]]).float()) if t.get("dtype", "f32") in _HALF else (lambda w: w)
            if self.optimizer["kind"] == "sgd":
                W[unique] = narrow(W[unique] - torch.full_like(g, self.optimizer["lr"]) * g)
                continue
            squares = torch.zeros(unique.numel())
            for j in range(dim):
                squares = squares + g[:, j] * g[:, j]
            a = acc[unique] + _divide(squares, torch.full_like(squares, float(dim)))
            acc[unique] = a
            step = _divide(torch.full_like(a, self.optimizer["lr"]), _sqrt(a) + torch.full_like(a, self.optimizer["eps"]))
            W[unique] = narrow(W[unique] - step[:, None].expand_as(g) * g)
