"""Every metric evaluation reports, one entry each; evaluation, comparison.md, the plots, the model card
and its model-index iterate `METRICS`, so adding a metric is adding an entry here.

An entry says what the metric is called (key in metrics.json, label on tables, plots and the card,
model-index type), which examples it is computed on (its `Population`: n, bootstrap resamples and
pairing with the base follow from it), whether it scores generated text (then it is compared only
between models that decoded the same way), which way is better, how it is printed, how it is
computed in words (`Method`, recorded with each evaluation) and how its statistic is built from a
model's rows (predictions.jsonl, medqa.jsonl), so that its interval is a bootstrap of that statistic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from training import medqa

if TYPE_CHECKING:
    from training.metrics import Statistic


@dataclass(frozen=True)
class Rows:
    """What phase 1 wrote for one model: every test answer with its scores, every MedQA answer."""

    predictions: list[dict]
    medqa: list[dict]


@dataclass(frozen=True)
class Population:
    """The examples a metric is computed on: `count_key` names their number in eval/<model>/run.json,
    `ids` tells two models' examples apart (paired differences need the same ones)."""

    name: str
    count_key: str
    ids: Callable[[Rows], list]


TEST = Population("test", "n", lambda rows: [r["id"] for r in rows.predictions])
MEDQA = Population("medqa", "medqa_n", lambda rows: [q["question"] for q in rows.medqa])


def _no_arguments(settings: str) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Method:
    """How a family of metrics is computed. `describe()` is recorded in run.json's `metric_settings[key]`
    when a model is evaluated (library versions included) and stated, with `note`, on the card and in
    comparison.md; `index_args` turns the recorded text into the model-index's metric args."""

    key: str
    title: str
    describe: Callable[[], str]
    note: str = ""
    index_args: Callable[[str], dict[str, Any]] = _no_arguments


@dataclass(frozen=True)
class Metric:
    key: str  # in metrics.json, comparison.json and predictions' scores
    label: str  # tables, plots, the card and the model-index's metric name
    population: Population
    method: Method
    statistic: Callable[[Rows], Statistic | None]  # None when the rows lack what it needs (no MedQA run)
    index_type: str | None  # model-index metric type; None: a diagnostic, on the card's tables but not the index
    decoded: bool = False  # scored on generated text: compared only between models decoded the same way
    lower_is_better: bool = False
    fmt: str = "{:.4f}"
    stderr: bool = False  # a 0/1 accuracy: also the harness's standard error of its mean


# ---- statistics: built from the rows alone, so eval/ can be re-summarised without the model ----------

def _bleu(rows: Rows):
    from training import metrics as M

    return M.bleu([r["prediction"] for r in rows.predictions], [r["reference"] for r in rows.predictions])


def _mean_score(kind: str) -> Callable[[Rows], Statistic | None]:
    """The mean of a per-example score phase 1 wrote (None for folders written before that score existed)."""
    def build(rows: Rows):
        from training import metrics as M

        if not rows.predictions or not all(kind in r["scores"] for r in rows.predictions):
            return None
        return M.mean([r["scores"][kind] for r in rows.predictions])
    return build


def _perplexity(rows: Rows):
    from training import metrics as M

    scores = [r["scores"] for r in rows.predictions]
    return M.perplexity([s["nll"] for s in scores], [s["answer_tokens"] for s in scores])


def _medqa_chat(rows: Rows):
    from training import metrics as M

    return M.mean([float(q["correct"]) for q in rows.medqa]) if rows.medqa else None


def _medqa_harness(normalise: bool) -> Callable[[Rows], Statistic | None]:
    def build(rows: Rows):
        from training import metrics as M

        if not rows.medqa or not all("harness_loglik" in q for q in rows.medqa):
            return None
        return M.mean(medqa.harness_correct(rows.medqa, normalise=normalise))
    return build


def _medqa_rotations(per_question: Callable[[dict], float]) -> Callable[[Rows], Statistic | None]:
    """The mean over MedQA questions of a value of its four answer orders (training.medqa.rotation_*)."""
    def build(rows: Rows):
        from training import metrics as M

        if not rows.medqa or not all("rotation_loglik" in q for q in rows.medqa):
            return None
        return M.mean([per_question(q) for q in rows.medqa])
    return build


def _letter_share(letter: str) -> Callable[[dict], float]:
    return lambda row: medqa.letter_share(row, letter)


# ---- how each family is computed, in words -----------------------------------------------------------

BLEU_PREFIX = "sacrebleu corpus BLEU, signature "
PERPLEXITY_SETTINGS = ("exp of the mean negative log-likelihood per token over the reference answers' tokens plus "
                       "the end-of-turn token, teacher-forced after the chat prompt (prompt tokens not scored)")


def _bleu_settings() -> str:
    from training.metrics import bleu_signature

    return BLEU_PREFIX + bleu_signature()


def _nltk_settings() -> str:
    from training.metrics import NLTK_SETTINGS

    return NLTK_SETTINGS


def _rouge_settings() -> str:
    from training.metrics import ROUGE_SETTINGS

    return ROUGE_SETTINGS


def _harness_settings() -> str:
    return (f"{medqa.HARNESS_REPO} task {medqa.HARNESS_TASK} (commit {medqa.HARNESS_COMMIT[:12]}), zero-shot; acc and "
            "acc_norm (log-likelihood / characters of the choice); stderr sqrt(p(1-p)/(n-1))")


def _harness_arguments(settings: str) -> dict[str, Any]:
    return {"harness_task": medqa.HARNESS_TASK, "num_fewshot": 0}


BLEU = Method("bleu", "BLEU", _bleu_settings, " (0–100).",
              lambda settings: {"signature": settings.removeprefix(BLEU_PREFIX)})
NLTK = Method("nltk_sentence_bleu", "mean sentence BLEU (nltk)", _nltk_settings,
              " (0–1): the number a notebook usually reports, not corpus BLEU.")
ROUGE = Method("rouge", "ROUGE", _rouge_settings, " (0–1).", lambda settings: {"use_stemmer": True, "f_measure": True})
PERPLEXITY = Method("perplexity", "Perplexity", lambda: PERPLEXITY_SETTINGS, "; lower is better.")
MEDQA_CHAT = Method("medqa_accuracy", "MedQA, chat", lambda: (
    "chat template, options listed; each option's text scored as the reply; highest mean log-probability per token"))
MEDQA_HARNESS = Method("medqa_harness", "MedQA, lm-eval-harness", _harness_settings,
                       "; the prompt is `Question: …\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer:` and the choices are the "
                       "letters, so acc and acc_norm coincide. Published zero-shot `medqa_4options` numbers are "
                       "comparable with these rows only.", _harness_arguments)

MEDQA_ORDER = Method("medqa_rotations", "MedQA, answer order", lambda: (
    "lm-evaluation-harness medqa_4options prompt and letter choice (as acc), each question asked four times with its "
    "options rotated cyclically, so that the correct answer stands once at each of A-D: accuracy averaged over the "
    "four orders; the share of questions answered with the same option (its text) in all four; and the share of "
    "answers at each letter"),
    "; a model that only prefers a letter scores 25% accuracy and 0% consistency, each letter's share is 25% without "
    "a letter preference, and uniform guessing is consistent on 1/64 of the questions.")

ROUGE_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}

# The registry, in the order of every table. Entries are looked up when used (never copied at import),
# so an entry appended here reaches every table, plot and card.
METRICS: list[Metric] = [
    Metric("bleu", "BLEU (sacrebleu)", TEST, BLEU, _bleu, "bleu", decoded=True, fmt="{:.2f}"),
    Metric("nltk_sentence_bleu", "mean sentence BLEU (nltk)", TEST, NLTK, _mean_score("nltk_sentence_bleu"),
           "sentence_bleu", decoded=True),
    *(Metric(kind, label, TEST, ROUGE, _mean_score(kind), kind, decoded=True) for kind, label in ROUGE_LABELS.items()),
    Metric("perplexity", "Perplexity", TEST, PERPLEXITY, _perplexity, "perplexity", lower_is_better=True, fmt="{:.3f}"),
    Metric("medqa_accuracy", "MedQA acc. (chat, option text)", MEDQA, MEDQA_CHAT, _medqa_chat, "accuracy",
           stderr=True),
    # the harness's own metric names, so these model-index entries read as its medqa_4options results
    Metric("medqa_harness_acc", "MedQA acc (lm-eval-harness)", MEDQA, MEDQA_HARNESS, _medqa_harness(False), "acc",
           stderr=True),
    Metric("medqa_harness_acc_norm", "MedQA acc_norm (lm-eval-harness)", MEDQA, MEDQA_HARNESS, _medqa_harness(True),
           "acc_norm", stderr=True),
    Metric("medqa_rotation_acc", "MedQA acc over 4 answer orders", MEDQA, MEDQA_ORDER,
           _medqa_rotations(medqa.rotation_accuracy), "acc_over_answer_orders", stderr=True),
    Metric("medqa_rotation_consistency", "MedQA same answer in all 4 orders", MEDQA, MEDQA_ORDER,
           _medqa_rotations(medqa.rotation_consistent), "answer_order_consistency", stderr=True),
    # Where the answers fall: diagnostics of a letter preference, not scores (no model-index entry).
    *(Metric(f"medqa_letter_{letter}", f"MedQA answers at {letter} (share)", MEDQA, MEDQA_ORDER,
             _medqa_rotations(_letter_share(letter)), None) for letter in medqa.LETTERS),
]
# Keys older eval/ folders may hold, dropped when they are re-summarised (nltk_bleu was bleu / 100).
RETIRED = ("nltk_bleu",)


def keys() -> list[str]:
    return [metric.key for metric in METRICS]


def get(key: str) -> Metric:
    return next(metric for metric in METRICS if metric.key == key)


def present(*results: dict[str, Any] | None) -> list[Metric]:
    """The registered metrics that any of these {key: ...} mappings holds, in registry order."""
    return [metric for metric in METRICS if any(result and metric.key in result for result in results)]


def methods(metrics: list[Metric]) -> list[Method]:
    """The methods behind these metrics, each once, in order."""
    return list({metric.method.key: metric.method for metric in metrics}.values())


def recorded_settings() -> dict[str, str]:
    """How every method computes, in words, for run.json (library versions as they are now)."""
    return {method.key: method.describe() for method in methods(METRICS)}


def method_lines(metrics: list[Metric], settings: dict[str, str]) -> list[tuple[str, str]]:
    """(title, how it was computed) for each method of these metrics: what was recorded at evaluation time
    (`settings`, from run.json), else how it is computed now, with the method's note."""
    return [(method.title, (settings.get(method.key) or method.describe()) + method.note)
            for method in methods(metrics)]
