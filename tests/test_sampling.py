"""_core.Sampler against an independent numpy model of the chain
(penalties -> top-k -> top-p -> min-p -> temperature -> draw)."""
import math

import numpy as np
import pytest

from decollama._native import core

OFF = dict(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def ref_probs(logits, history=(), temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0,
              presence_penalty=0.0, frequency_penalty=0.0, penalty_last_n=64):
    """The chain written straight from its definition, over the full vocabulary."""
    x = np.asarray(logits, dtype=np.float32).copy()
    hist = np.asarray(history, dtype=np.int64)
    if penalty_last_n != 0 and len(hist):
        window = hist if penalty_last_n < 0 else hist[-penalty_last_n:]
        ids, counts = np.unique(window, return_counts=True)
        v = x[ids]
        v = np.where(v <= 0, v * np.float32(repeat_penalty), v / np.float32(repeat_penalty))
        x[ids] = v - (counts * np.float32(frequency_penalty) + np.float32(presence_penalty)).astype(np.float32)
    if temperature <= 0:
        out = np.zeros(len(x))
        out[np.argmax(x)] = 1.0
        return out
    order = np.lexsort((np.arange(len(x)), -x))  # descending logit, ties by lower id
    keep = order if top_k <= 0 else order[:top_k]
    if top_p < 1.0:
        p = np.exp(x[keep].astype(np.float64) - x[keep].max())
        p /= p.sum()
        n = int(np.searchsorted(np.cumsum(p), top_p)) + 1  # first prefix with mass >= top_p
        keep = keep[:min(n, len(keep))]
    if min_p > 0.0:
        keep = keep[x[keep] >= np.float32(x[keep].max() + np.log(np.float32(min_p)))]
    z = x[keep].astype(np.float64) / temperature
    p = np.exp(z - z.max())
    out = np.zeros(len(x))
    out[keep] = p / p.sum()
    return out


def chi2_ok(counts, probs, alpha_z=3.719):
    """Pearson chi-square goodness of fit at p ~ 1e-4 (Wilson-Hilferty quantile; no scipy)."""
    n = counts.sum()
    support = probs > 0
    assert counts[~support].sum() == 0, "drew a token the chain removed"
    expected = probs[support] * n
    stat = float((((counts[support] - expected) ** 2) / expected).sum())
    df = int(support.sum()) - 1
    if df == 0:
        return True
    crit = df * (1 - 2 / (9 * df) + alpha_z * math.sqrt(2 / (9 * df))) ** 3
    return stat < crit


def draw(sampler, logits, n, history=None):
    counts = np.zeros(len(logits), dtype=np.int64)
    for _ in range(n):
        counts[sampler.sample(logits, history)] += 1
    return counts


@pytest.fixture
def logits():
    return np.random.default_rng(7).normal(0, 2, 200).astype(np.float32)


CHAINS = [
    dict(),  # the defaults
    dict(temperature=1.0, **OFF),
    dict(temperature=0.5, top_k=10, top_p=1.0, min_p=0.0),
    dict(temperature=1.3, top_k=0, top_p=0.7, min_p=0.0),
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.2),
    dict(temperature=2.0, top_k=50, top_p=0.9, min_p=0.01),
    dict(temperature=0.7, top_k=1000, top_p=0.99, min_p=0.0),
    dict(temperature=1.0, top_k=5, top_p=0.3, min_p=0.5),
]


@pytest.mark.parametrize("params", CHAINS)
def test_probs_match_reference(logits, params):
    s = core.Sampler(**params)
    got = s.probs(logits)
    assert got.dtype == np.float32 and got.shape == logits.shape
    np.testing.assert_allclose(got, ref_probs(logits, **params), atol=2e-6)


@pytest.mark.parametrize("params", [
    dict(repeat_penalty=1.5),
    dict(presence_penalty=0.7),
    dict(frequency_penalty=0.4),
    dict(repeat_penalty=1.3, presence_penalty=0.2, frequency_penalty=0.3, penalty_last_n=5),
    dict(repeat_penalty=0.8, penalty_last_n=-1),
    dict(repeat_penalty=2.0, penalty_last_n=0),
])
def test_penalties_match_reference(logits, params):
    history = np.array([3, 9, 3, 150, 3, 42, 9, 0, 199], dtype=np.int32)
    full = dict(temperature=1.0, **OFF)
    full.update(params)
    s = core.Sampler(**full)
    np.testing.assert_allclose(s.probs(logits, history), ref_probs(logits, history, **full), atol=2e-6)


def test_penalties_change_only_the_right_logits():
    # Flat positive and negative logits make each penalty's effect readable from the log-ratios.
    x = np.array([2.0, 2.0, -1.0, -1.0, 0.5, 0.5], dtype=np.float32)
    history = np.array([4, 0, 2, 0, 1], dtype=np.int32)  # last 4: 0, 2, 0, 1; token 4 falls out
    s = core.Sampler(temperature=1.0, repeat_penalty=2.0, presence_penalty=0.25, frequency_penalty=0.5,
                     penalty_last_n=4, **{k: v for k, v in OFF.items() if k != "repeat_penalty"})
    logp = np.log(s.probs(x, history).astype(np.float64))
    rel = logp - logp[5]  # token 5 is untouched, as is token 4 (outside the window)
    expected = np.array([2.0 / 2 - 2 * 0.5 - 0.25,   # positive: divided; seen twice
                         2.0 / 2 - 0.5 - 0.25,       # seen once
                         -1.0 * 2 - 0.5 - 0.25,      # negative: multiplied
                         -1.0, 0.5, 0.5]) - 0.5
    np.testing.assert_allclose(rel, expected, atol=1e-5)


def test_greedy_is_argmax_and_ignores_the_seed(logits):
    want = int(np.argmax(logits))
    for seed in range(5):
        s = core.Sampler(temperature=0.0, seed=seed)
        assert [s.sample(logits) for _ in range(5)] == [want] * 5
    probs = core.Sampler(temperature=-1.0).probs(logits)
    assert probs[want] == 1.0 and probs.sum() == 1.0


def test_greedy_applies_penalties_and_breaks_ties_by_lowest_id():
    x = np.array([1.0, 3.0, 3.0, 2.9], dtype=np.float32)
    assert core.Sampler(temperature=0).sample(x) == 1
    hist = np.array([1, 2], dtype=np.int32)
    assert core.Sampler(temperature=0, repeat_penalty=1.1).sample(x, hist) == 3


def test_seeded_sampling_is_reproducible_and_seeds_differ(logits):
    params = dict(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    s1, s2, s3 = (core.Sampler(seed=k, **params) for k in (123, 123, 124))
    seq1 = [s1.sample(logits) for _ in range(200)]
    seq2 = [s2.sample(logits) for _ in range(200)]
    seq3 = [s3.sample(logits) for _ in range(200)]
    assert seq1 == seq2
    assert seq1 != seq3
    assert len(set(seq1)) > 10  # really sampling, not stuck on one token
    s1.reseed(123)
    assert [s1.sample(logits) for _ in range(200)] == seq1


def test_probs_does_not_advance_the_rng(logits):
    a, b = core.Sampler(seed=5), core.Sampler(seed=5)
    seq_a = [a.sample(logits) for _ in range(50)]
    seq_b = []
    for _ in range(50):
        b.probs(logits)
        seq_b.append(b.sample(logits))
    assert seq_a == seq_b


@pytest.mark.parametrize("params", [
    dict(temperature=1.0, **OFF),                                 # plain softmax
    dict(temperature=0.6, top_k=0, top_p=1.0, min_p=0.0),          # temperature
    dict(temperature=1.0, top_k=6, top_p=1.0, min_p=0.0),          # top-k
    dict(temperature=1.0, top_k=0, top_p=0.8, min_p=0.0),          # top-p
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1),          # min-p
    dict(temperature=1.4, top_k=12, top_p=0.9, min_p=0.02, repeat_penalty=1.3),
])
def test_draws_follow_the_reference_distribution(params):
    x = np.random.default_rng(3).normal(0, 1.2, 24).astype(np.float32)
    history = np.array([0, 1, 2, 3], dtype=np.int32)
    ref = ref_probs(x, history, **params)
    s = core.Sampler(seed=2024, **params)
    counts = draw(s, x, 20000, history)
    assert chi2_ok(counts, ref)


def test_temperature_changes_the_draws_measurably():
    # The chi-square test is not vacuous: draws at T=1 reject the T=0.6 distribution.
    x = np.random.default_rng(3).normal(0, 1.2, 24).astype(np.float32)
    counts = draw(core.Sampler(seed=1, temperature=1.0, **OFF), x, 20000)
    assert not chi2_ok(counts, ref_probs(x, temperature=0.6, **OFF))


@pytest.mark.parametrize("top_p,scale", [(0.9, 3.0), (0.95, 0.05)])
def test_top_p_over_a_large_vocabulary(top_p, scale):
    # 262144 tokens like Gemma; scale 0.05 spreads the mass so the nucleus is most of the vocabulary.
    x = np.random.default_rng(11).normal(0, scale, 262144).astype(np.float32)
    params = dict(temperature=1.0, top_k=0, top_p=top_p, min_p=0.0)
    got = core.Sampler(**params).probs(x)
    ref = ref_probs(x, **params)
    assert np.count_nonzero(got) == np.count_nonzero(ref)
    np.testing.assert_allclose(got, ref, atol=1e-7)


def test_masked_tokens_are_never_drawn():
    x = np.full(10, -np.inf, dtype=np.float32)
    x[[2, 7]] = [0.0, 0.3]
    counts = draw(core.Sampler(seed=3, temperature=1.0, **OFF), x, 2000)
    assert set(np.nonzero(counts)[0]) == {2, 7}


def test_history_may_be_a_view_or_omitted(logits):
    s = core.Sampler(temperature=1.0, repeat_penalty=1.5, **{k: v for k, v in OFF.items() if k != "repeat_penalty"})
    hist = np.arange(20, dtype=np.int32)
    np.testing.assert_allclose(s.probs(logits, hist[5:15]), ref_probs(logits, hist[5:15], temperature=1.0,
                               repeat_penalty=1.5, top_k=0, top_p=1.0, min_p=0.0), atol=2e-6)
    np.testing.assert_allclose(s.probs(logits), ref_probs(logits, temperature=1.0, **OFF), atol=2e-6)


@pytest.mark.parametrize("kwargs,name", [
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.01), "top_p"), (dict(top_p=float("nan")), "top_p"),
    (dict(top_k=-1), "top_k"), (dict(min_p=-0.1), "min_p"), (dict(min_p=1.5), "min_p"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(repeat_penalty=0.0), "repeat_penalty"), (dict(repeat_penalty=float("nan")), "repeat_penalty"),
    (dict(presence_penalty=float("inf")), "presence_penalty"),
    (dict(frequency_penalty=float("nan")), "frequency_penalty"),
    (dict(penalty_last_n=-2), "penalty_last_n"),
])
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        core.Sampler(**kwargs)


def test_bad_inputs():
    s = core.Sampler()
    x = np.zeros(8, dtype=np.float32)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        s.sample(x, np.array([8], dtype=np.int32))
    with pytest.raises(ValueError, match="NaN"):
        s.sample(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="-inf"):
        s.sample(np.full(4, -np.inf, dtype=np.float32))
    with pytest.raises(ValueError, match="empty"):
        s.sample(np.zeros(0, dtype=np.float32))
    with pytest.raises(TypeError):
        s.sample(np.zeros((2, 4), dtype=np.float32))


def test_properties_and_repr():
    s = core.Sampler(temperature=0.5, top_k=7, seed=99)
    assert (s.temperature, s.top_k, s.seed) == (0.5, 7, 99)
    assert "top_k=7" in repr(s)
