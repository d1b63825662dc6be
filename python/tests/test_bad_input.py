"""Bad arguments raise a Python exception with a clear message (never a crash of the
interpreter), and a failed call writes nothing to a table."""

import pytest
import torch

import strata
import strata.torch as st


@pytest.fixture
def module():
    return st.EmbeddingBagCollection(
        [st.EmbeddingBagConfig("t", 50, 4, ["a", "b"]), st.EmbeddingBagConfig("u", 20, 8, ["c"], pooling="mean")],
        tiers=strata.Tiers(device=0.1, host=0.2),
        optimizer=strata.RowWiseAdagrad(0.1),
    )


def good():
    return {
        "a": (torch.tensor([1, 2, 3]), torch.tensor([2, 1])),
        "b": (torch.tensor([4]), torch.tensor([0, 1])),
        "c": (torch.tensor([5, 6]), torch.tensor([1, 1])),
    }


def unchanged(module, before):
    after = {name: module.rows(name) for name in ("t", "u")}
    for name in before:
        assert torch.equal(before[name][0], after[name][0]) and torch.equal(before[name][1], after[name][1])
    assert sum(s["lookups"] for s in module.stats().values()) == 0


@pytest.mark.parametrize("change,error,message", [
    (lambda f: f.update(z=f["a"]), ValueError, "unknown feature `z`"),
    (lambda f: f.pop("b"), ValueError, "feature `b` is missing"),
    (lambda f: f.update(c=(torch.tensor([5, 20]), torch.tensor([1, 1]))), ValueError, "feature `c`: value 1 is 20, out of range for a table of 20 rows"),
    (lambda f: f.update(c=(torch.tensor([5, -1]), torch.tensor([1, 1]))), ValueError, "feature `c`: value 1 is -1, out of range"),
    (lambda f: f.update(a=(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2, 1]))), TypeError, "feature `a`: values must be int64 or int32, not float32"),
    (lambda f: f.update(a=(torch.tensor([1, 2, 3], device="meta"), torch.tensor([2, 1]))), ValueError, "feature `a`: values is on meta; Strata takes CPU tensors"),
    (lambda f: f.update(a=(torch.tensor([1, 2, 3]), torch.tensor([2, 2]))), ValueError, "feature `a`: the last offset is 4, but there are 3 values"),
    (lambda f: f.update(b=(torch.tensor([4]), torch.tensor([0, 0, 1]))), ValueError, "feature `b` has 3 bags, the batch before it 2"),
    (lambda f: f.update(b=st.Bags(torch.tensor([4]), lengths=torch.tensor([0, 1]), weights=torch.tensor([1.0, 2.0]))), ValueError, "feature `b`: 2 weights for 1 values"),
    (lambda f: f.update(b=st.Bags(torch.tensor([4]), lengths=torch.tensor([0, 1]), weights=torch.tensor([1.0], dtype=torch.float64))), TypeError, "weights must be float32"),
    (lambda f: f.update(a=(torch.tensor([1, 2, 3]), torch.tensor([2, -1, 2]))), ValueError, "lengths must not be negative"),
])
def test_bad_features_are_refused_and_nothing_is_written(module, change, error, message):
    before = {name: module.rows(name) for name in ("t", "u")}
    features = good()
    change(features)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        out = module(features)
        sum(o.sum() for o in out.values()).backward()
    unchanged(module, before)
    # The module still works afterwards.
    out = module(good())
    sum(o.sum() for o in out.values()).backward()


def test_steps_out_of_announced_order_are_refused(module):
    module.announce(good())
    other = good()
    other["c"] = (torch.tensor([7, 8]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="differs from the oldest announced one"):
        module(other)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="feature `a` is in two tables"):
        st.EmbeddingBagCollection([st.EmbeddingBagConfig("t", 5, 4, ["a"]), st.EmbeddingBagConfig("u", 5, 4, ["a"])])
    with pytest.raises(ValueError, match="pooling must be sum or mean"):
        st.EmbeddingBagCollection([st.EmbeddingBagConfig("t", 5, 4, ["a"], pooling="max")])
    with pytest.raises(ValueError, match="unknown policy|policy"):
        st.EmbeddingBagCollection([st.EmbeddingBagConfig("t", 5, 4, ["a"])], policy="nonsense")
    with pytest.raises(ValueError, match="device = 1.5"):
        st.EmbeddingBagCollection([st.EmbeddingBagConfig("t", 5, 4, ["a"])], tiers=strata.Tiers(device=1.5))
    with pytest.raises(TypeError, match="optimizer must be"):
        st.EmbeddingBagCollection([st.EmbeddingBagConfig("t", 5, 4, ["a"])], optimizer="adam")
