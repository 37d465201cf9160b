"""Text metrics and bootstrap confidence intervals, as pure functions of strings and numbers.

Every metric is reduced to per-example sufficient statistics (a row of numbers per example) and a
function from their column sums to the corpus score. A bootstrap resample is then a vector of
example counts, so all resamples of every metric are one matrix product (counts @ stats) plus a
cheap score per row, and corpus BLEU is recomputed exactly as sacrebleu would on the resample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
NLTK_MAX_ORDER = 4
# nltk's SmoothingFunction().method1 epsilon: zero n-gram counts become 0.1 / total.
NLTK_EPSILON = 0.1


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


# --- nltk BLEU --------------------------------------------------------------------------------

def nltk_tokens(text: str) -> list[str]:
    """nltk BLEU needs token lists; we use sacrebleu's 13a tokenizer so both BLEUs see the same tokens."""
    return _TOKENIZE_13A(text.rstrip()).split()


def nltk_bleu_statistics(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per example: [hyp_len, ref_len, numerator_1..4, denominator_1..4] as nltk's corpus_bleu sums them."""
    from nltk.translate.bleu_score import modified_precision

    rows = []
    for prediction, reference in zip(predictions, references, strict=True):
        hyp, ref = nltk_tokens(prediction), nltk_tokens(reference)
        precisions = [modified_precision([ref], hyp, n) for n in range(1, NLTK_MAX_ORDER + 1)]
        rows.append([len(hyp), len(ref)] + [p.numerator for p in precisions] + [p.denominator for p in precisions])
    return np.array(rows, dtype=np.int64).reshape(len(predictions), 2 + 2 * NLTK_MAX_ORDER)


def nltk_bleu_from_sums(sums: np.ndarray) -> float:
    """nltk corpus_bleu (0-1), uniform 4-gram weights, SmoothingFunction().method1, one reference."""
    hyp_len, ref_len = int(sums[0]), int(sums[1])
    numerators = [int(x) for x in sums[2: 2 + NLTK_MAX_ORDER]]
    denominators = [int(x) for x in sums[2 + NLTK_MAX_ORDER:]]
    if numerators[0] == 0:
        return 0.0
    if hyp_len > ref_len:
        brevity = 1.0
    else:
        brevity = math.exp(1 - ref_len / hyp_len)
    precisions = [(num if num else NLTK_EPSILON) / den for num, den in zip(numerators, denominators)]
    return brevity * math.exp(math.fsum(0.25 * math.log(p) for p in precisions))


def nltk_bleu(predictions: Sequence[str], references: Sequence[str]) -> Statistic:
    return Statistic(nltk_bleu_statistics(predictions, references), nltk_bleu_from_sums)


# --- ROUGE, perplexity, accuracy --------------------------------------------------------------

def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-example ROUGE-1/2/L F1 from rouge_score's RougeScorer(use_stemmer=True)."""
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


# --- bootstrap --------------------------------------------------------------------------------

def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) matrix: how often each example is drawn in each bootstrap resample."""
    indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = indices + n * np.arange(resamples)[:, None]
    return np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n)


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(stat: Statistic, counts: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Point estimate and percentile bootstrap interval."""
    low, high = _interval(stat.resampled(counts), confidence)
    return {"value": stat.value(), "ci_low": low, "ci_high": high}


def paired_bootstrap(model: Statistic, base: Statistic, counts: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """model minus base, both scored on the same resamples of the same examples."""
    low, high = _interval(model.resampled(counts) - base.resampled(counts), confidence)
    return {"diff": model.value() - base.value(), "ci_low": low, "ci_high": high}


def _build_singletons():
    from sacrebleu.metrics import BLEU
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    # The defaults of sacrebleu.corpus_bleu (13a tokenizer, exp smoothing, no effective order);
    # sacrebleu.sentence_bleu adds effective order.
    return BLEU(), BLEU(effective_order=True), Tokenizer13a()


_BLEU_CORPUS, _BLEU_SENTENCE, _TOKENIZE_13A = _build_singletons()
