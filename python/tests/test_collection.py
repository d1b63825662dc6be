"""Strata's EmbeddingBagCollection against a reference in plain PyTorch: bit-identical
pooled outputs over several training steps and bit-identical rows (values and optimizer
state) afterwards, for sum and mean pooling, weighted and unweighted bags, tables of
several dims (two of them of one dim, so stored and tiered as one group), with every row
in host memory and with small device and host tiers."""

import pytest
import torch

import strata
import strata.torch as st
from reference import ReferenceCollection

ROWS = {"small": 97, "wide": 400, "big": 3000, "also": 500}


def tables(pooling, data_type="fp32"):
    return [
        st.EmbeddingBagConfig("small", ROWS["small"], 4, ["s1", "s2"], pooling=pooling, data_type=data_type),
        st.EmbeddingBagConfig("wide", ROWS["wide"], 64, ["w1"], pooling=pooling),
        st.EmbeddingBagConfig("big", ROWS["big"], 16, ["b1"], pooling=pooling, data_type=data_type),
        st.EmbeddingBagConfig("also", ROWS["also"], 16, ["a1"], pooling=pooling),
    ]


def step_features(generator, weighted, batch=32):
    """feature -> (values, offsets, weights or None), Zipf-like ids, some empty bags.
    ``weighted``: True, False, or the set of features that are."""
    features = {}
    for f, table in [("s1", "small"), ("s2", "small"), ("w1", "wide"), ("b1", "big"), ("a1", "also")]:
        lengths = torch.randint(0, 6, (batch,), generator=generator)
        n = int(lengths.sum())
        u = torch.rand(n, generator=generator)
        values = (ROWS[table] * u**3).to(torch.int64).clamp(max=ROWS[table] - 1)
        offsets = torch.zeros(batch + 1, dtype=torch.int64)
        offsets[1:] = lengths.cumsum(0)
        weights = torch.rand(n, generator=generator) * 2 if weighted is True or (weighted and f in weighted) else None
        features[f] = (values, offsets, weights)
    return features


def as_bags(features):
    return {f: st.Bags(v, offsets=o, weights=w) for f, (v, o, w) in features.items()}


def bits(t):
    return t.contiguous().view(torch.int32)


def train_side_by_side(pooling, weighted, optimizer, steps=12, window=0, keyed=False, data_type="fp32", **module_args):
    module = st.EmbeddingBagCollection(tables(pooling, data_type), optimizer=optimizer, seed=5, **module_args)
    names = [t["name"] for t in module.tables]
    reference = ReferenceCollection(module.tables, [module.weights(n) for n in names], optimizer.config())
    generator = torch.Generator().manual_seed(11)
    batches = [step_features(generator, weighted) for _ in range(steps)]
    grad_gen = torch.Generator().manual_seed(3)
    for features in st.ReadAhead(batches, module, window=window, features=as_bags):
        step_side_by_side(module, reference, features, grad_gen, keyed)
    check_rows(module, reference, optimizer)
    return module


def step_side_by_side(module, reference, features, grad_gen, keyed=False):
    """One training step of both, the pooled outputs compared bit for bit. ``keyed``:
    the loss reads the outputs concatenated per sample (a KeyedTensor's layout), so each
    feature's gradient reaches Strata as a strided view into one wider tensor."""
    out = module(as_bags(features))
    want = reference.forward(features)
    for f in want:
        assert torch.equal(bits(out[f]), bits(want[f])), f"feature {f}: pooled outputs differ"
    # A loss whose gradient differs per element: sum of outputs times fixed noise.
    noise = {f: torch.randn(o.shape, generator=grad_gen) for f, o in out.items()}
    if keyed:
        loss = (torch.cat(list(out.values()), dim=1) * torch.cat(list(noise.values()), dim=1)).sum()
    else:
        loss = sum((o * noise[f]).sum() for f, o in out.items())
    loss.backward()
    reference.backward(noise)


def check_rows(module, reference, optimizer):
    for n in [t["name"] for t in module.tables]:
        values, state = module.rows(n)
        assert torch.equal(bits(values), bits(reference.weights[n])), f"table {n}: rows differ"
        if optimizer.config()["kind"] == "row_wise_adagrad":
            assert torch.equal(bits(state[:, 0]), bits(reference.acc[n])), f"table {n}: Adagrad state differs"


def test_a_read_ahead_loop_left_early_withdraws_its_announced_batches(tmp_path):
    optimizer = strata.RowWiseAdagrad(lr=0.05)
    module = st.EmbeddingBagCollection(
        tables("sum"), optimizer=optimizer, seed=5, tiers=strata.Tiers(device=0.02, host=0.1),
        policy="lookahead:64", table_dir=tmp_path,
    )
    reference = ReferenceCollection(module.tables, [module.weights(t["name"]) for t in module.tables], optimizer.config())
    generator = torch.Generator().manual_seed(11)
    batches = [step_features(generator, True) for _ in range(10)]
    grad_gen = torch.Generator().manual_seed(3)
    for i, features in enumerate(st.ReadAhead(batches[:6], module, window=3, features=as_bags)):
        if i == 2:
            break
        step_side_by_side(module, reference, features, grad_gen)
    assert module.announced() == 0, "the batches announced ahead were withdrawn"
    # The next loop, over other batches, reads ahead and trains as if nothing was left.
    for features in st.ReadAhead(batches[6:], module, window=2, features=as_bags):
        step_side_by_side(module, reference, features, grad_gen)
    check_rows(module, reference, optimizer)


@pytest.mark.parametrize("pooling", ["sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_in_host_matches_plain_pytorch(pooling, weighted):
    train_side_by_side(pooling, weighted, strata.RowWiseAdagrad(lr=0.05, eps=1e-8))


@pytest.mark.parametrize("pooling,weighted,policy,window", [
    ("sum", False, "lru", 0),
    ("mean", True, "s3fifo", 2),
    ("sum", True, "lookahead:64", 3),
])
def test_small_tiers_match_plain_pytorch(pooling, weighted, policy, window, tmp_path):
    module = train_side_by_side(
        pooling, weighted, strata.RowWiseAdagrad(lr=0.05), window=window,
        tiers=strata.Tiers(device=0.02, host=0.1), policy=policy, table_dir=tmp_path,
    )
    stats = module.stats()
    group = f"dim16-{pooling}"
    assert stats[group]["tables"] == ["big", "also"], "tables of one dim and pooling share a group"
    assert stats[group]["bytes_store_to_host"] > 0, "the group's rows came from its file"
    assert (tmp_path / f"{group}.strata").exists()


def test_a_group_of_weighted_and_unweighted_tables_matches_plain_pytorch(tmp_path):
    # "big" (weighted) and "also" (not) share the dim-16 group: the unweighted one's values
    # weigh 1 there, which must change no bit.
    train_side_by_side(
        "mean", {"s1", "b1"}, strata.RowWiseAdagrad(lr=0.05), window=2,
        tiers=strata.Tiers(device=0.02, host=0.1), policy="s3fifo", table_dir=tmp_path,
    )


def test_gradients_read_as_strided_views_match_plain_pytorch(tmp_path):
    train_side_by_side(
        "sum", True, strata.RowWiseAdagrad(lr=0.05), keyed=True, window=2,
        tiers=strata.Tiers(device=0.02, host=0.1), policy="lru", table_dir=tmp_path,
    )


@pytest.mark.parametrize("data_type", ["fp16", "bf16"])
def test_half_precision_tables_match_plain_pytorch_rounding_to_nearest(data_type, tmp_path):
    # "small" and "big" store halves, "wide" and "also" float32: "big" and "also" (one dim,
    # one pooling) are two groups now.
    module = train_side_by_side(
        "sum", True, strata.RowWiseAdagrad(lr=0.05), data_type=data_type, window=2,
        tiers=strata.Tiers(device=0.02, host=0.1), policy="lru", table_dir=tmp_path,
    )
    suffix = {"fp16": "f16", "bf16": "bf16"}[data_type]
    stats = module.stats()
    assert stats[f"dim16-sum-{suffix}"]["tables"] == ["big"] and stats["dim16-sum"]["tables"] == ["also"]
    half, full = stats[f"dim16-sum-{suffix}"], stats["dim16-sum"]
    # 8 words of packed values + the accumulator against 16 + 1: read at 9/17 the bytes a row.
    assert half["bytes_store_to_host"] % (9 * 4) == 0 and full["bytes_store_to_host"] % (17 * 4) == 0
    # Stored values are halves: widening them to float32 and back changes no bit.
    values = module.weights("big")
    assert torch.equal(values, values.to({"fp16": torch.float16, "bf16": torch.bfloat16}[data_type]).float())


def test_stochastic_rounding_keeps_rows_near_the_nearest_rounding():
    # Only the rounding differs: each value is one of the two halves around the float32
    # result, so the tables stay within a few units in the last place of each other.
    nearest = train_side_by_side("sum", False, strata.RowWiseAdagrad(lr=0.05), data_type="fp16", steps=4)
    module = st.EmbeddingBagCollection(tables("sum", "fp16"), optimizer=strata.RowWiseAdagrad(lr=0.05), seed=5, stochastic_rounding=True)
    generator, grad_gen = torch.Generator().manual_seed(11), torch.Generator().manual_seed(3)
    for features in [step_features(generator, False) for _ in range(4)]:
        out = module(as_bags(features))
        sum((o * torch.randn(o.shape, generator=grad_gen)).sum() for o in out.values()).backward()
    got, want = module.weights("big"), nearest.weights("big")
    assert not torch.equal(got, want), "stochastic rounding rounded some value the other way"
    torch.testing.assert_close(got, want, rtol=4e-3, atol=1e-4)


def test_sgd_matches_plain_pytorch():
    train_side_by_side("sum", True, strata.SGD(lr=0.1), tiers=strata.Tiers(device=0.05, host=0.2))


def test_resume_comes_back_to_the_checkpoint(tmp_path):
    def module(resume=False):
        return st.EmbeddingBagCollection(tables("sum"), tiers=strata.Tiers(device=0.02, host=0.1), table_dir=tmp_path, seed=5, resume=resume)

    first = module()
    generator = torch.Generator().manual_seed(1)
    for k in range(8):
        if k == 5:
            first.checkpoint(5)
            saved = {t["name"]: first.rows(t["name"]) for t in first.tables}
        out = first(as_bags(step_features(generator, weighted=True)))
        sum(o.sum() for o in out.values()).backward()
    first.flush()  # rows after the checkpoint reach the files; the undo journal rolls them back
    resumed = module(resume=True)
    assert resumed.resumed_from == 5
    for name, (values, state) in saved.items():
        got = resumed.rows(name)
        assert torch.equal(got[0], values) and torch.equal(got[1], state), name
