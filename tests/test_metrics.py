"""Metrics equal the reference libraries on fixed strings; the bootstrap is deterministic and covers."""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu, sentence_bleu
from rouge_score.rouge_scorer import RougeScorer

from training import metrics as M

PREDICTIONS = [
    "The heart pumps blood through the body.",
    "Insulin lowers glucose",
    "",
    "aspirin inhibits COX enzymes irreversibly",
    "Vitamin K deficiency causes bleeding, e.g. in newborns.",
    "Tachycardia: a heart rate above 100 beats/min.",
    "The phrenic nerve (C3–C5) innervates the diaphragm.",
    "no idea",
]
REFERENCES = [
    "The heart pumps blood to the body.",
    "Insulin lowers blood glucose levels.",
    "Something",
    "Aspirin irreversibly inhibits COX-1 and COX-2.",
    "Vitamin K deficiency causes bleeding in newborns.",
    "Tachycardia is a heart rate above 100 beats per minute.",
    "The diaphragm is innervated by the phrenic nerve (C3, C4, C5).",
    "Hyperkalemia",
]


def test_bleu_equals_sacrebleu():
    stat = M.bleu(PREDICTIONS, REFERENCES)
    assert stat.value() == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score, abs=1e-9)
    sentence = [M.sentence_bleu_from_stats(row) for row in stat.per_example]
    expected = [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES)]
    assert sentence == pytest.approx(expected, abs=1e-9)


def test_bleu_signature_is_sacrebleus():
    signature = M.bleu_signature()
    assert signature.startswith("nrefs:1|case:mixed|eff:no|")
    assert f"version:{sacrebleu.__version__}" in signature and "tok:13a" in signature and "smooth:exp" in signature


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_nltk_sentence_bleu_is_the_per_sentence_average_not_corpus_bleu():
    ours = M.nltk_sentence_bleu(PREDICTIONS, REFERENCES)
    smoothing = SmoothingFunction().method1
    expected = [sentence_bleu([M.nltk_tokens(r)], M.nltk_tokens(p), smoothing_function=smoothing)
                for p, r in zip(PREDICTIONS, REFERENCES)]
    assert ours == pytest.approx(expected, abs=1e-12)
    corpus = corpus_bleu([[M.nltk_tokens(r)] for r in REFERENCES], [M.nltk_tokens(p) for p in PREDICTIONS],
                         smoothing_function=smoothing)
    # Genuinely another number than corpus BLEU (nltk's or sacrebleu's).
    assert M.mean(ours).value() != pytest.approx(corpus, abs=1e-2)
    assert M.mean(ours).value() != pytest.approx(M.bleu(PREDICTIONS, REFERENCES).value() / 100, abs=1e-2)


def test_rouge_equals_rouge_score_with_stemmer():
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    expected = [scorer.score(r, p) for p, r in zip(PREDICTIONS, REFERENCES)]
    ours = M.rouge_scores(PREDICTIONS, REFERENCES)
    for kind in M.ROUGE_TYPES:
        assert M.mean(ours[kind]).value() == pytest.approx(np.mean([e[kind].fmeasure for e in expected]), abs=1e-9)


def test_perplexity_is_exp_of_token_weighted_mean_nll():
    stat = M.perplexity([2.0, 9.0], [1, 3])
    assert stat.value() == pytest.approx(np.exp(11.0 / 4))


def test_resampled_bleu_is_sacrebleu_on_the_resampled_corpus():
    counts = M.resample_counts(len(PREDICTIONS), resamples=5, seed=3)
    assert (counts.sum(axis=1) == len(PREDICTIONS)).all()
    scores = M.bleu(PREDICTIONS, REFERENCES).resampled(counts)
    for row, score in zip(counts, scores):
        picked = np.repeat(np.arange(len(PREDICTIONS)), row)
        expected = sacrebleu.corpus_bleu([PREDICTIONS[i] for i in picked], [[REFERENCES[i] for i in picked]]).score
        assert score == pytest.approx(expected, abs=1e-9)


def test_bootstrap_is_deterministic_and_covers_the_point_estimate():
    stats = {
        "bleu": M.bleu(PREDICTIONS, REFERENCES),
        "nltk_sentence_bleu": M.mean(M.nltk_sentence_bleu(PREDICTIONS, REFERENCES)),
        **{k: M.mean(v) for k, v in M.rouge_scores(PREDICTIONS, REFERENCES).items()},
        "perplexity": M.perplexity(np.linspace(5, 40, 8), np.arange(2, 10)),
    }
    first = {k: M.bootstrap_ci(s, M.resample_counts(8, 1000, seed=7)) for k, s in stats.items()}
    again = {k: M.bootstrap_ci(s, M.resample_counts(8, 1000, seed=7)) for k, s in stats.items()}
    other = M.bootstrap_ci(stats["bleu"], M.resample_counts(8, 1000, seed=8))
    assert first == again
    assert other != first["bleu"]
    for name, ci in first.items():
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"], name
        assert ci["ci_low"] < ci["ci_high"], name


def test_paired_bootstrap_uses_the_same_resamples():
    counts = M.resample_counts(len(PREDICTIONS), 1000, seed=1)
    model = M.bleu(PREDICTIONS, REFERENCES)
    assert M.paired_bootstrap(model, model, counts) == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    better = M.mean(np.ones(8) * 0.5 + np.arange(8) / 100)
    base = M.mean(np.ones(8) * 0.4 + np.arange(8) / 100)
    # Same examples, constant improvement of 0.1: a paired interval has no resampling noise.
    paired = M.paired_bootstrap(better, base, counts)
    assert paired["diff"] == pytest.approx(0.1)
    assert paired["ci_low"] == pytest.approx(0.1) and paired["ci_high"] == pytest.approx(0.1)


def test_rougelsum_splits_at_newlines_only():
    prediction, reference = "The cat sat.\nThe dog ran.", "The dog ran.\nThe cat sat."
    scores = M.rouge_scores([prediction, "one line only"], [reference, "only one line"])
    assert scores["rougeLsum"][0] == pytest.approx(1.0) and scores["rougeL"][0] < 1.0
    assert scores["rougeLsum"][1] == pytest.approx(scores["rougeL"][1])


def test_jackknife_leaves_each_example_out():
    stat = M.bleu(PREDICTIONS, REFERENCES)
    expected = [sacrebleu.corpus_bleu(PREDICTIONS[:i] + PREDICTIONS[i + 1:], [REFERENCES[:i] + REFERENCES[i + 1:]]).score
                for i in range(len(PREDICTIONS))]
    assert stat.jackknife() == pytest.approx(expected, abs=1e-9)


def test_bca_without_bias_or_skew_is_the_percentile_interval():
    resampled = np.linspace(-1, 1, 2001)  # median 0 = the estimate: z0 = 0
    jackknife = np.array([-1.0, 0.0, 1.0])  # symmetric: acceleration 0
    low, high = M.bca_interval(0.0, resampled, jackknife, 0.95)
    assert (low, high) == pytest.approx(tuple(np.quantile(resampled, [0.025, 0.975])))
    assert M.bca_interval(2.0, np.full(100, 2.0), jackknife, 0.95) == (2.0, 2.0)


def test_mean_stderr_is_the_harness_sample_stderr():
    correct = [1, 0, 0, 1, 1, 0, 0, 0, 1, 0]
    p, n = np.mean(correct), len(correct)
    assert M.mean_stderr(correct) == pytest.approx(np.sqrt(p * (1 - p) / (n - 1)))
    assert M.mean_stderr([1.0]) is None


# --- coverage: a 95% interval should contain the true value about 95% of the time -------------------

BLEU_LIKE_PRECISIONS = np.array([0.25, 0.08, 0.03, 0.012])  # a weak system, corpus BLEU about 3


def bleu_like_rows(rng, n: int) -> np.ndarray:
    """Synthetic sacrebleu segment statistics: [hyp_len, ref_len, correct_1..4, total_1..4] per example."""
    ref, hyp = 1 + rng.poisson(30, n), 1 + rng.poisson(20, n)
    totals = np.stack([np.maximum(hyp - k, 0) for k in range(4)], axis=1)
    return np.column_stack([hyp, ref, rng.binomial(totals, BLEU_LIKE_PRECISIONS), totals])


def synthetic_perplexity(rng, n: int) -> M.Statistic:
    tokens = 1 + rng.poisson(30, n)
    return M.perplexity(tokens * rng.gamma(4.0, 0.6, n), tokens)  # mean nll per token 2.4


COVERAGE_CASES = {
    # name: (draw a test set of n examples, the value the metric converges to)
    "corpus BLEU": (lambda rng, n: M.Statistic(bleu_like_rows(rng, n), M.bleu_from_sums),
                    lambda: M.bleu_from_sums(bleu_like_rows(np.random.default_rng(99), 1_000_000).sum(axis=0))),
    "perplexity": (synthetic_perplexity, lambda: float(np.exp(2.4))),
    "accuracy": (lambda rng, n: M.mean((rng.random(n) < 0.3).astype(float)), lambda: 0.3),
}


@pytest.mark.parametrize("case", sorted(COVERAGE_CASES))
def test_bca_intervals_cover_near_95_percent(case):
    """300 synthetic test sets of n=150 (the real test split's size order), 500 resamples each."""
    draw, truth = COVERAGE_CASES[case]
    target, rng, replications = truth(), np.random.default_rng(0), 300
    hits = 0
    for replication in range(replications):
        stat = draw(rng, 150)
        ci = M.bootstrap_ci(stat, M.resample_counts(150, 500, seed=replication), confidence=0.95)
        hits += ci["ci_low"] <= target <= ci["ci_high"]
    # The binomial standard error of 300 replications is 1.3 points.
    assert 0.92 <= hits / replications <= 0.98, f"{case}: {hits / replications:.3f}"
