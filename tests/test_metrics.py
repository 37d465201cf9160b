"""Metrics equal the reference libraries on fixed strings; the bootstrap is deterministic and sound."""
from __future__ import annotations

import numpy as np
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu
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


def test_nltk_bleu_equals_nltk_corpus_bleu_method1():
    stat = M.nltk_bleu(PREDICTIONS, REFERENCES)
    expected = corpus_bleu(
        [[M.nltk_tokens(r)] for r in REFERENCES], [M.nltk_tokens(p) for p in PREDICTIONS],
        smoothing_function=SmoothingFunction().method1,
    )
    assert 0 < stat.value() < 1
    assert stat.value() == pytest.approx(expected, abs=1e-9)


def test_rouge_equals_rouge_score_with_stemmer():
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
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
        "nltk_bleu": M.nltk_bleu(PREDICTIONS, REFERENCES),
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
