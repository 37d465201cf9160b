"""Text metrics and bootstrap confidence intervals, as pure functions of strings and numbers.

Every metric is reduced to per-example sufficient statistics (a row of numbers per example) and a
function from their column sums to the corpus score. A bootstrap resample is then a vector of
example counts, so all resamples of every metric are one matrix product (counts @ stats) plus a
cheap score per row, and corpus BLEU is recomputed exactly as sacrebleu would on the resample.
Leaving one example out is the column sums minus its row, which gives the jackknife that BCa
intervals need at the cost of n more scores.

Intervals are BCa (bias-corrected and accelerated, Efron 1987): the percentile interval covers too
rarely for skewed, ratio-type statistics at test-split sizes (corpus BLEU near 1 at n=150: about
80-88% for a nominal 95%); BCa corrects for the bootstrap distribution's median bias and skew.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

# rouge-score's RougeScorer(use_stemmer=True), F1. rougeLsum splits sentences at newlines only
# (split_summaries=False, the library default): for one-line answers it equals rougeL.
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_SETTINGS = "rouge-score RougeScorer(use_stemmer=True), F1; rougeLsum splits at newlines only"
NLTK_SETTINGS = ("mean over examples of nltk sentence_bleu (uniform 4-gram weights, SmoothingFunction().method1) "
                 "on sacrebleu 13a tokens")
INTERVAL_METHOD = "BCa bootstrap"


@dataclass(frozen=True)
class Statistic:
    """Per-example sufficient statistics (n rows) and the corpus score of their column sums."""

    per_example: np.ndarray
    score: Callable[[np.ndarray], float]

    def value(self) -> float:
        return float(self.score(self.per_example.sum(axis=0)))

    def resampled(self, counts: np.ndarray) -> np.ndarray:
        """The score on each resample; `counts[b, i]` is how often example i is drawn in resample b."""
        return np.array([self.score(sums) for sums in counts @ self.per_example])

    def jackknife(self) -> np.ndarray:
        """The score with each example left out in turn (n values)."""
        leave_one_out = self.per_example.sum(axis=0) - self.per_example
        return np.array([self.score(sums) for sums in leave_one_out])


# --- sacrebleu BLEU -------------------------------------------------------------------------

def bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacrebleu's segment statistics: [hyp_len, ref_len, correct_1..4, total_1..4] per example."""
    # The same extraction sacrebleu's own corpus_score and significance tests use.
    stats = _BLEU_CORPUS._extract_corpus_statistics(list(predictions), [list(references)])
    return np.array(stats, dtype=np.int64).reshape(len(predictions), -1)


def bleu_from_sums(sums: np.ndarray) -> float:
    """Corpus BLEU (0-100) from summed segment statistics, exactly as sacrebleu.corpus_bleu."""
    return _BLEU_CORPUS._compute_score_from_stats([int(s) for s in sums]).score


def sentence_bleu_from_stats(stats: np.ndarray) -> float:
    """Per-example BLEU (0-100), as sacrebleu.sentence_bleu (effective order)."""
    return _BLEU_SENTENCE._compute_score_from_stats([int(s) for s in stats]).score


def bleu(predictions: Sequence[str], references: Sequence[str]) -> Statistic:
    return Statistic(bleu_statistics(predictions, references), bleu_from_sums)


def bleu_signature() -> str:
    """sacrebleu's signature of the corpus BLEU above, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`."""
    from sacrebleu.metrics import BLEU

    metric = BLEU()  # the signature knows nrefs only after a scoring call; we always score one reference
    metric.corpus_score(["a"], [["a"]])
    return str(metric.get_signature())


# --- nltk sentence BLEU -----------------------------------------------------------------------

def nltk_tokens(text: str) -> list[str]:
    """nltk BLEU needs token lists; we use sacrebleu's 13a tokenizer so both BLEUs see the same tokens."""
    return _TOKENIZE_13A(text.rstrip()).split()


def nltk_sentence_bleu(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-example nltk sentence_bleu (0-1): the number a notebook averages, unlike corpus BLEU.

    Averaging sentence scores weights every answer equally and is dominated by the smoothing of short
    answers' missing 3- and 4-grams; corpus BLEU pools the n-gram counts first. Both are reported.
    """
    import warnings

    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method1
    with warnings.catch_warnings():  # nltk warns on every answer without a matching 4-gram
        warnings.simplefilter("ignore")
        return np.array([
            float(sentence_bleu([nltk_tokens(ref)], nltk_tokens(pred), smoothing_function=smoothing))
            for pred, ref in zip(predictions, references, strict=True)
        ], dtype=np.float64)


# --- ROUGE, perplexity, accuracy --------------------------------------------------------------

def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example ROUGE-1/2/L/Lsum F1 from rouge_score's RougeScorer(use_stemmer=True)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {kind: np.array([s[kind].fmeasure for s in scores], dtype=np.float64) for kind in ROUGE_TYPES}


def _ratio(sums: np.ndarray) -> float:
    return float(sums[0] / sums[1])


def _exp_ratio(sums: np.ndarray) -> float:
    return float(math.exp(sums[0] / sums[1]))


def mean(values: Sequence[float]) -> Statistic:
    """The average of per-example values (ROUGE F1, accuracy)."""
    values = np.asarray(values, dtype=np.float64)
    return Statistic(np.column_stack([values, np.ones_like(values)]), _ratio)


def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> Statistic:
    """exp of the token-weighted mean negative log-likelihood over all examples."""
    return Statistic(np.column_stack([np.asarray(nll_sums, np.float64), np.asarray(token_counts, np.float64)]), _exp_ratio)


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of a mean as lm-evaluation-harness reports it: sample stddev (n-1) / sqrt(n).

    For 0/1 accuracies that is sqrt(p (1 - p) / (n - 1)). None for fewer than two values.
    """
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None
    return float(values.std(ddof=1) / math.sqrt(len(values)))


# --- bootstrap --------------------------------------------------------------------------------

def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) matrix: how often each example is drawn in each bootstrap resample."""
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = indices + n * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n)


def bca_interval(estimate: float, resampled: np.ndarray, jackknife: np.ndarray,
                 confidence: float) -> tuple[float, float]:
    """Efron's bias-corrected and accelerated bootstrap interval.

    z0 (bias) is the normal quantile of the share of resamples below the estimate (ties count half);
    the acceleration a is the skewness of the jackknife values / 6. Each tail's percentile is moved
    to Phi(z0 + (z0 + z) / (1 - a (z0 + z))). With z0 = a = 0 this is the percentile interval.
    """
    resampled = np.asarray(resampled, dtype=np.float64)
    spread = np.ptp(resampled)
    if spread <= 1e-12 * max(1.0, abs(estimate)):  # every resample scores the same: nothing to correct
        return float(resampled.min()), float(resampled.max())
    normal, count = NormalDist(), len(resampled)
    below = (np.sum(resampled < estimate) + 0.5 * np.sum(resampled == estimate)) / count
    z0 = normal.inv_cdf(min(max(below, 0.5 / count), 1 - 0.5 / count))
    deviations = jackknife.mean() - np.asarray(jackknife, dtype=np.float64)
    squares = float(np.sum(deviations ** 2))
    acceleration = float(np.sum(deviations ** 3)) / (6 * squares ** 1.5) if squares > 0 else 0.0
    levels = []
    for tail in ((1 - confidence) / 2, (1 + confidence) / 2):
        z = z0 + normal.inv_cdf(tail)
        levels.append(normal.cdf(z0 + z / max(1 - acceleration * z, 1e-12)))
    low, high = np.quantile(resampled, levels)
    return float(low), float(high)


def bootstrap_ci(stat: Statistic, counts: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Point estimate and BCa bootstrap interval."""
    value = stat.value()
    low, high = bca_interval(value, stat.resampled(counts), stat.jackknife(), confidence)
    return {"value": value, "ci_low": low, "ci_high": high}


def paired_bootstrap(model: Statistic, base: Statistic, counts: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """model minus base, both scored on the same resamples (and jackknife) of the same examples; BCa."""
    diff = model.value() - base.value()
    low, high = bca_interval(diff, model.resampled(counts) - base.resampled(counts),
                             model.jackknife() - base.jackknife(), confidence)
    return {"diff": diff, "ci_low": low, "ci_high": high}


def _build_singletons():
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    # The defaults of sacrebleu.corpus_bleu (13a tokenizer, exp smoothing, no effective order);
    # sacrebleu.sentence_bleu adds effective order.
    return BLEU(), BLEU(effective_order=True), Tokenizer13a()


_BLEU_CORPUS, _BLEU_SENTENCE, _TOKENIZE_13A = _build_singletons()
