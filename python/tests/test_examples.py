"""Each example runs (small), so that it keeps working."""

import policy_comparison
import serve
import train_dlrm


def test_train_dlrm_learns(tmp_path):
    losses = train_dlrm.main(["--steps", "60", "--batch", "128", "--table-dir", str(tmp_path), "--policy", "lookahead:8192"])
    assert len(losses) == 60 and sum(losses[-10:]) < sum(losses[:10])


def test_serve_scores_every_request():
    scores, stats = serve.main(["--train-steps", "10", "--requests", "40", "--batch", "16"])
    assert scores.shape == (40 * 16,) and bool(((scores > 0) & (scores < 1)).all())
    assert sum(s["lookups"] for s in stats.values()) > 0


def test_policy_comparison_covers_every_policy():
    rows, curve = policy_comparison.main(["--keys", "20000", "--distinct", "2000"])
    assert len({r["policy"] for r in rows}) == 8 and len(rows) == 32
    assert curve
