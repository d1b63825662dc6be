"""Strata's tiered tables as a PyTorch module: ``EmbeddingBagCollection``, a drop-in for
TorchRec's (and for FBGEMM's ``SplitTableBatchedEmbeddingBagsCodegen`` with a fused
optimizer), and ``ReadAhead``, which hands it the next batches' ids before the model asks
for them.

The rows never become a PyTorch parameter: forward pools them inside Strata straight into
the output tensors, and backward hands the output gradients to Strata, which applies the
optimizer to exactly the batch's rows in whichever tier holds them (no dense gradient of
the weights exists). Inputs and outputs are CPU tensors.
"""

import collections
import dataclasses
import functools
import json
import os

import torch
from torch import nn

from . import RowWiseAdagrad, SGD, Tiers, _native

try:  # TorchRec is optional: with it, KeyedJaggedTensor in and KeyedTensor out.
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor
except Exception:  # noqa: BLE001 - any import failure means "not available"
    KeyedJaggedTensor = KeyedTensor = None


@dataclasses.dataclass
class EmbeddingBagConfig:
    """One table, as TorchRec's ``EmbeddingBagConfig`` describes it (which is accepted as
    well). ``pooling``: ``"sum"`` or ``"mean"``. Initial rows are uniform in
    ``[-init_scale, init_scale)``; by default ``sqrt(1 / num_embeddings)``, TorchRec's.
    ``data_type``: how the rows store their values, ``"fp32"``, or ``"fp16"`` / ``"bf16"``
    at half the bytes (TorchRec's ``DataType`` is accepted too); computed in float32."""

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: list
    pooling: str = "sum"
    init_scale: float = None
    data_type: str = "fp32"


@dataclasses.dataclass
class Bags:
    """One feature's bags: ``values`` (row ids), and ``lengths`` (one per bag) or
    ``offsets`` (one more than the bags), and optionally ``weights`` (one per value)."""

    values: torch.Tensor
    lengths: torch.Tensor = None
    offsets: torch.Tensor = None
    weights: torch.Tensor = None


def _pooling(value):
    name = getattr(value, "name", value)
    name = str(name).lower()
    if name not in ("sum", "mean"):
        raise ValueError(f"pooling must be sum or mean, not {value!r}")
    return name


# Fields of TorchRec's EmbeddingBagConfig that Strata has no equivalent for: each must
# keep its default, or the config is refused rather than silently built otherwise.
_TORCHREC_DEFAULTS = {
    "num_embeddings_post_pruning": None,
    "need_pos": False,
    "input_dim": None,
    "total_num_buckets": None,
    "use_virtual_table": False,
    "virtual_table_eviction_policy": None,
    "enable_embedding_update": False,
    "stash_weights": False,
}


def _init_scale(config):
    """The table's initial rows' scale: Strata's ``init_scale``, or TorchRec's
    ``weight_init_min = -s`` / ``weight_init_max = s`` (or the uniform ``init_fn`` TorchRec
    makes of them), or ``sqrt(1 / num_embeddings)`` (TorchRec's default). Raises for
    anything Strata would initialise otherwise."""

    def refuse(what):
        raise ValueError(f"table `{config.name}`: {what}")

    for field, default in _TORCHREC_DEFAULTS.items():
        value = getattr(config, field, default)
        if value != default:
            refuse(f"{field} = {value!r} is not supported (only its default, {default!r})")
    # TorchRec turns weight_init_min / max (or its default) into
    # init_fn = partial(torch.nn.init.uniform_, a=..., b=...): that one Strata can honour.
    init_fn = getattr(config, "init_fn", None)
    if init_fn is None:
        low, high = getattr(config, "weight_init_min", None), getattr(config, "weight_init_max", None)
    elif (
        isinstance(init_fn, functools.partial)
        and init_fn.func is torch.nn.init.uniform_
        and not init_fn.args
        and set(init_fn.keywords) == {"a", "b"}
    ):
        low, high = init_fn.keywords["a"], init_fn.keywords["b"]
    else:
        refuse(
            f"init_fn {init_fn!r} is not supported: Strata initialises every row itself, uniform in [-s, s); "
            "give weight_init_min = -s and weight_init_max = s instead"
        )
    if low is None and high is None:
        scale = getattr(config, "init_scale", None)
        return (1.0 / config.num_embeddings) ** 0.5 if scale is None else scale
    if low is None or high is None or not high > 0 or low != -high:
        refuse(
            f"weight_init_min = {low}, weight_init_max = {high}: Strata's rows start uniform in [-s, s); "
            "give both, with weight_init_min = -weight_init_max"
        )
    return high


_DTYPES = {"FP32": "f32", "FP16": "f16", "BF16": "bf16"}


def _dtype(config):
    """The table's row storage: TorchRec's ``data_type`` (a ``DataType`` or its name)."""
    data_type = getattr(config, "data_type", None)
    if data_type is None:
        return "f32"
    name = str(getattr(data_type, "name", data_type)).upper()
    if name not in _DTYPES:
        raise ValueError(f"table `{config.name}`: data_type {name}: Strata stores rows as FP32, FP16 or BF16")
    return _DTYPES[name]


def _table(config):
    scale = _init_scale(config)
    return {
        "name": config.name,
        "rows": int(config.num_embeddings),
        "dim": int(config.embedding_dim),
        "pooling": _pooling(config.pooling),
        "features": list(config.feature_names),
        "init_scale": float(scale),
        "dtype": _dtype(config),
    }


def _cpu(tensor, feature, what, dtypes):
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"feature `{feature}`: {what} must be a tensor, not {type(tensor).__name__}")
    if tensor.device.type != "cpu":
        raise ValueError(f"feature `{feature}`: {what} is on {tensor.device}; Strata takes CPU tensors")
    if tensor.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"feature `{feature}`: {what} must be {names}, not {str(tensor.dtype).removeprefix('torch.')}")
    if tensor.dim() != 1:
        raise ValueError(f"feature `{feature}`: {what} must be one-dimensional, not of shape {tuple(tensor.shape)}")
    return tensor


_IDS = (torch.int64, torch.int32)


def _bags(feature, bags):
    """(values int64, offsets int64, weights float32 or None), contiguous, checked."""
    if isinstance(bags, (tuple, list)):
        if len(bags) not in (2, 3):
            raise ValueError(f"feature `{feature}`: give (values, lengths) or (values, lengths, weights)")
        bags = Bags(bags[0], lengths=bags[1], weights=bags[2] if len(bags) == 3 else None)
    elif hasattr(bags, "values") and hasattr(bags, "offsets") and callable(bags.values):  # a TorchRec JaggedTensor
        bags = Bags(bags.values(), offsets=bags.offsets(), weights=bags.weights_or_none())
    elif not isinstance(bags, Bags):
        raise TypeError(f"feature `{feature}`: expected Bags, (values, lengths) or a JaggedTensor, not {type(bags).__name__}")
    values = _cpu(bags.values, feature, "values", _IDS).to(torch.int64).contiguous()
    if (bags.lengths is None) == (bags.offsets is None):
        raise ValueError(f"feature `{feature}`: give lengths or offsets, not both or neither")
    if bags.lengths is not None:
        lengths = _cpu(bags.lengths, feature, "lengths", _IDS).to(torch.int64)
        if lengths.numel() and lengths.min() < 0:
            raise ValueError(f"feature `{feature}`: lengths must not be negative")
        offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
    else:
        offsets = _cpu(bags.offsets, feature, "offsets", _IDS).to(torch.int64).contiguous()
        if offsets.numel() == 0:
            raise ValueError(f"feature `{feature}`: offsets must hold at least one value (0)")
    weights = None
    if bags.weights is not None:
        weights = _cpu(bags.weights, feature, "weights", (torch.float32,)).contiguous()
    return values, offsets, weights


def _address(tensor):
    return (tensor.data_ptr(), tensor.numel()) if tensor is not None and tensor.numel() else (0, 0)


class _Step:
    """One step's inputs in the engine's order, with the tensors kept alive for the call."""

    def __init__(self, module, features):
        self.tensors = []
        self.args = []
        self.batch = None
        if KeyedJaggedTensor is not None and isinstance(features, KeyedJaggedTensor):
            features = features.to_dict()
        if not isinstance(features, dict):
            raise TypeError(f"features must be a KeyedJaggedTensor or a dict of feature -> bags, not {type(features).__name__}")
        unknown = sorted(set(features) - set(module._features))
        if unknown:
            raise ValueError(f"unknown feature `{unknown[0]}` (the tables have {', '.join(module._features)})")
        missing = [f for f in module._features if f not in features]
        if missing:
            raise ValueError(f"feature `{missing[0]}` is missing from the batch")
        for name in module._features:
            values, offsets, weights = _bags(name, features[name])
            bags = offsets.numel() - 1
            if self.batch is None:
                self.batch = bags
            elif bags != self.batch:
                raise ValueError(f"feature `{name}` has {bags} bags, the batch before it {self.batch}")
            self.tensors += [values, offsets, weights]
            self.args.append((_address(values), _address(offsets), _address(weights)))


class _Lookup(torch.autograd.Function):
    """Forward: Strata pools every table group's bags into fresh output tensors, one per
    group, and each feature gets a view of its group's. Backward: each feature's output
    gradient goes to Strata where it lies (a row stride lets it be a view into a wider
    tensor, as the gradients of ``torch.stack`` or a ``KeyedTensor`` are), and Strata
    applies the optimizer to the step's rows."""

    @staticmethod
    def forward(ctx, anchor, module, step):
        pooled = module._lookup(step, for_training=True)
        ctx.module = module
        return tuple(pooled)

    @staticmethod
    def backward(ctx, *grads):
        # An output the loss does not use gets zeros (autograd materialises them).
        grads = [g if g.dtype == torch.float32 else g.float() for g in grads]
        # Rows must be dense; a stride between them is read as it is.
        grads = [g if g.dim() == 2 and g.stride(1) == 1 and g.stride(0) >= g.shape[1] else g.contiguous() for g in grads]
        ctx.module._native.apply_gradients([_strided(g) for g in grads])
        return None, None, None


def _strided(grad):
    """(address, values spanned, row stride) of a 2-D float32 tensor with dense rows."""
    rows, dim = grad.shape
    span = (rows - 1) * grad.stride(0) + dim if rows else 0
    return (grad.data_ptr() if span else 0, span, grad.stride(0))


class EmbeddingBagCollection(nn.Module):
    """Embedding bags over tables that live in Strata's tiers.

    ``tables``: ``EmbeddingBagConfig``s (Strata's or TorchRec's). ``tiers``: a
    ``strata.Tiers`` (or a dict ``{"device": 0.02, "host": 0.1}``): each table group's
    share of rows in the device and host tiers (tables of one dim, pooling and data type
    are stored and cached together, as one group). ``policy``: the tiers' eviction policy by name
    (``"lru"``, ``"s3fifo"``, ``"lookahead:N"``, ...), or a pair (device, host).
    ``window``: batches ``ReadAhead`` reads ahead by default. ``optimizer``:
    ``strata.RowWiseAdagrad(lr, eps)`` or ``strata.SGD(lr)``, applied in backward.
    ``table_dir``: a folder for the table groups' files (created afresh); none keeps them in
    memory. ``seed``: of the initial rows. ``resume``: open the tables of ``table_dir`` at
    their last ``checkpoint`` instead of creating them (``resumed_from`` says which).
    ``stochastic_rounding``: FBGEMM's, for FP16 / BF16 tables: each update rounds to one of
    the two nearest representable values at random (in proportion to nearness) instead of
    to the nearest.

    ``forward(features)`` takes a TorchRec ``KeyedJaggedTensor`` or a dict of feature ->
    ``Bags`` / ``(values, lengths)`` / JaggedTensor, and returns a ``KeyedTensor`` for a
    ``KeyedJaggedTensor`` input (TorchRec installed) or a dict of feature -> pooled
    tensor ``(batch, dim)``. In training mode with grad enabled, the backward pass of the
    outputs updates the rows; otherwise (``eval()`` or ``torch.no_grad()``) it is a pure
    lookup.
    """

    def __init__(
        self,
        tables,
        tiers=None,
        policy="lru",
        window=0,
        optimizer=None,
        table_dir=None,
        seed=0,
        write_buffer=0.0,
        resume=False,
        stochastic_rounding=False,
    ):
        super().__init__()
        tiers = tiers if tiers is not None else Tiers()
        if isinstance(tiers, dict):
            tiers = Tiers(**tiers)
        optimizer = optimizer if optimizer is not None else RowWiseAdagrad()
        if not isinstance(optimizer, (RowWiseAdagrad, SGD)):
            raise TypeError(f"optimizer must be strata.RowWiseAdagrad or strata.SGD, not {type(optimizer).__name__}")
        device_policy, host_policy = (policy, policy) if isinstance(policy, str) else tuple(policy)
        self.tables = [_table(t) for t in tables]
        self.window = int(window)
        self._features = [f for t in self.tables for f in t["features"]]
        config = {
            "tables": self.tables,
            "device": float(tiers.device),
            "host": float(tiers.host),
            "device_policy": device_policy,
            "host_policy": host_policy,
            "hierarchy": tiers.hierarchy,
            "optimizer": optimizer.config(),
            "seed": int(seed),
            "table_dir": None if table_dir is None else os.fspath(table_dir),
            "write_buffer": float(write_buffer),
            "rounding": "stochastic" if stochastic_rounding else "nearest",
        }
        self.resumed_from = None
        if resume:
            self._native, self.resumed_from = _native.Collection.resume(json.dumps(config))
        else:
            self._native = _native.Collection(json.dumps(config))
        # Tables of one dim, pooling and data type are stored and tiered together, as one
        # group with one output: (name, dim, the group's tables by index), in the order of
        # outputs.
        self._groups = self._native.groups()
        self._state_floats = 1 if isinstance(optimizer, RowWiseAdagrad) else 0
        # The autograd graph needs one input that requires grad; no gradient reaches it.
        self._anchor = torch.empty(0, requires_grad=True)

    def forward(self, features):
        keyed = KeyedJaggedTensor is not None and isinstance(features, KeyedJaggedTensor)
        step = _Step(self, features)
        if self.training and torch.is_grad_enabled():
            outs = _Lookup.apply(self._anchor, self, step)
        else:
            outs = self._lookup(step, for_training=False)
        pooled = collections.OrderedDict(zip(self._features, outs))
        if keyed:
            return KeyedTensor.from_tensor_list(list(pooled), list(pooled.values()))
        return pooled

    def announce(self, features):
        """Hands a future batch's features to Strata: its store reads start now, and the
        lookahead policies see it. Batches must then reach ``forward`` in the order they
        were announced (``ReadAhead`` does this)."""
        step = _Step(self, features)
        self._native.announce(step.args)

    def announced(self):
        """Batches announced and not yet looked up."""
        return self._native.announced()

    def withdraw(self):
        """Withdraws the batches announced and not yet looked up (their reads are
        dropped): what ``ReadAhead`` does when its loop is left early. Returns how many
        there were."""
        return self._native.withdraw()

    def flush(self):
        """Writes every dirty row down to the tables' stores and makes it durable."""
        self._native.flush()

    def checkpoint(self, step):
        """A crash-safe checkpoint of the tables (numbers must rise): every dirty row
        written to the table files and synced, a manifest committed, each file's undo
        journal restarted; after a crash, ``resume=True`` comes back to it. The dense
        model's own state is the caller's to save (``torch.save``)."""
        self._native.checkpoint(int(step))

    def stats(self):
        """The engine's counters per table group (tables of one dim, pooling and data type are stored
        and cached together): ``{group: {...}}`` (hits, misses, promotions, evictions per
        tier, bytes moved per link, store reads, latencies, and the group's ``tables``)."""
        return json.loads(self._native.stats())

    def rows(self, table):
        """Every row of ``table`` as training has left it: ``(weights, optimizer state)``,
        tensors of ``(num_embeddings, dim)`` and ``(num_embeddings, state)``."""
        t = self._index(table)
        spec = self.tables[t]
        state = self._state_floats
        buffer = torch.empty(spec["rows"], spec["dim"] + state, dtype=torch.float32)
        self._native.read_rows(t, buffer.data_ptr(), buffer.numel())
        return buffer[:, : spec["dim"]], buffer[:, spec["dim"] :]

    def weights(self, table):
        """Every row's values of ``table``, ``(num_embeddings, dim)``."""
        return self.rows(table)[0]

    # The engine's side of forward and backward.

    def _lookup(self, step, for_training):
        """Every feature's pooled tensor, in the order of ``_features``: views of one
        output tensor per group, which Strata fills in place."""
        outs = []
        views = {}
        for _, dim, tables in self._groups:
            names = [f for t in tables for f in self.tables[t]["features"]]
            out = torch.empty(len(names) * step.batch, dim, dtype=torch.float32)
            outs.append(out)
            views.update(zip(names, out.split(step.batch)))
        self._native.lookup(step.args, [_address(o) for o in outs], for_training)
        return [views[f] for f in self._features]

    def _index(self, table):
        for i, t in enumerate(self.tables):
            if t["name"] == table:
                return i
        raise ValueError(f"no table `{table}` (the tables are {', '.join(t['name'] for t in self.tables)})")


class ReadAhead:
    """Iterates over ``batches`` (a DataLoader, any iterable) and announces each batch's
    features to ``module`` ``window`` batches before it is yielded, so Strata reads their
    rows while the model works on the current ones and the lookahead policies see them.
    ``features(batch)`` picks a batch's features (default: the batch itself, or its first
    element if it is a tuple or list). Batches come out unchanged and in order; feed
    their features to ``module`` in that order. A loop left early (``break``, an
    exception) withdraws the batches announced and not yet looked up, so the module
    is ready for the next loop."""

    def __init__(self, batches, module, window=None, features=None):
        self.batches = batches
        self.module = module
        self.window = module.window if window is None else int(window)
        self.features = features or (lambda b: b[0] if isinstance(b, (tuple, list)) else b)

    def __iter__(self):
        ahead = collections.deque()
        source = iter(self.batches)
        try:
            for batch in source:
                self.module.announce(self.features(batch))
                ahead.append(batch)
                if len(ahead) > self.window:
                    yield ahead.popleft()
            while ahead:
                yield ahead.popleft()
        finally:
            if self.module.announced():
                self.module.withdraw()
