"""Does an export answer as its adapter does? Measured on the test questions, on the CPU in float32.

- the merge against the adapter: the largest logit difference on the test prompts (prompt + reference
  answer, teacher-forced) of the float32 merge, which says the right base and scale were merged; the
  saved 16-bit merged model's difference (reported: 16-bit rounding alone moves logits by about that
  much) and its greedy answers, equal to the adapter's or diverging only at a near-tie the rounding can swap;
- each GGUF through llama.cpp (llama-cpp-python): the prompt tokens when llama.cpp applies the chat
  template stored in the file, against the transformers tokenizer's, on every test conversation; the
  logits' NMSE against the merged model (llama.cpp's own measure, examples/model-conversion:
  mean squared error / variance of the reference); the greedy answers, stopping where llama.cpp
  stops (its end-of-generation tokens), against the merged model's;
- every model's ROUGE-L against the reference answers, with the paired BCa interval against the adapter's.

The functions take folders, files and models, not a run: `export` calls them on the export it has just
written, and the same calls serve files downloaded from a pushed commit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADAPTER, MERGE, MERGED = "adapter", "merge", "merged"
# Targets (issue #28); an export missing a gated one is not kept (exit 6; failures()). The greedy share
# allows one near-tie flipped by 16-bit rounding in 32 questions.
MAX_MERGE_LOGIT_DIFF = 1e-3
MAX_NMSE = {"F16": 1e-4, "Q8_0": 1e-3}
MIN_GREEDY_SHARE = {"F16": 31 / 32}
# The merged weights are the adapter's, rounded to 16 bits: their greedy answers are the adapter's except where
# the two best tokens are so close that the rounding swaps them. A divergence counts as such a near-tie when the
# merged model's margin between the two tokens is within twice the largest logit change the rounding made.
NEAR_TIE_GAPS = 2
GATED = (MERGED, "F16")  # besides the merge, and every file's template and stop tokens (failures())


@dataclass(frozen=True)
class Questions:
    """The test questions a verification answers, and every test conversation its templates render."""

    ids: list[str]
    questions: list[str]
    references: list[str]
    prompt_ids: list[list[int]]  # the chat prompt, as training and evaluation tokenize it
    sequence_ids: list[list[int]]  # prompt + reference answer + end of turn: the logits are compared here
    conversations: list[list[dict]]  # one-turn and two-turn chats built from all test questions


@dataclass
class Answer:
    ids: list[int]  # generated tokens, the stop token included when there was one
    stopped: bool  # False: it ran to max_new_tokens


@dataclass
class LogitGap:
    """Running statistics of test logits against reference logits, over many sequences."""

    squared_error: float = 0.0
    reference_sum: float = 0.0
    reference_squares: float = 0.0
    values: int = 0
    max_abs: float = 0.0
    positions: int = 0
    same_top1: int = 0

    def add(self, reference: np.ndarray, test: np.ndarray) -> None:
        reference, diff = reference.astype(np.float64), test.astype(np.float64) - reference
        self.squared_error += float(np.sum(diff ** 2))
        self.reference_sum += float(np.sum(reference))
        self.reference_squares += float(np.sum(reference ** 2))
        self.values += reference.size
        self.max_abs = max(self.max_abs, float(np.max(np.abs(diff))))
        self.positions += reference.shape[0]
        self.same_top1 += int(np.sum(reference.argmax(-1) == test.argmax(-1)))

    def summary(self) -> dict:
        mean = self.reference_sum / self.values
        variance = self.reference_squares / self.values - mean ** 2
        return {"nmse": self.squared_error / self.values / variance, "max_abs_diff": self.max_abs,
                "top1_agreement": self.same_top1 / self.positions, "positions": self.positions}


# ---------------------------------------------------------------- inputs


def load_questions(data_dir: Path, split: str, limit: int, tokenizer, system_prompt: str) -> Questions:
    """The first `limit` questions of the prepared split; conversations from all of them."""
    from datasets import load_from_disk

    from common.errors import DataError
    from training.chat import build_messages
    from training.generation import encode_prompt, prompt_completion_ids

    try:
        rows = load_from_disk(str(data_dir))[split]
    except (FileNotFoundError, KeyError):
        raise DataError(f"{data_dir}: no prepared '{split}' split to verify the export on") from None
    chosen = rows.select(range(min(limit, len(rows))))
    conversations = []
    for i, row in enumerate(rows):
        conversations.append(build_messages(system_prompt, row["question"]))
        if i:  # a follow-up after an answered question: the history goes through the template too
            previous = rows[i - 1]
            conversations.append(build_messages(system_prompt, previous["question"], previous["answer"])
                                 + [{"role": "user", "content": row["question"]}])
    return Questions(
        ids=list(chosen["id"]), questions=list(chosen["question"]), references=list(chosen["answer"]),
        prompt_ids=[encode_prompt(tokenizer, p) for p in chosen["prompt"]],
        sequence_ids=[prompt_completion_ids(tokenizer, p, c)[0] for p, c in zip(chosen["prompt"], chosen["completion"])],
        conversations=conversations,
    )


@dataclass(frozen=True)
class Decoding:
    """Greedy, as the adapter's generation_config.json says (its length cap, penalty and stop tokens)."""

    max_new_tokens: int
    repetition_penalty: float
    stop_ids: tuple[int, ...]
    end_of_turn: int


# ---------------------------------------------------------------- transformers models


@dataclass
class ModelRun:
    answers: list[Answer]
    logits: list[np.ndarray] = field(repr=False)


def run_transformers(model, tokenizer, questions: Questions, decoding: Decoding, batch_size: int = 8) -> ModelRun:
    """Logits on every test sequence and greedy answers of a transformers model (CPU, float32)."""
    model = model.float().eval()
    return ModelRun(greedy_transformers(model, tokenizer, questions.prompt_ids, decoding, batch_size),
                    sequence_logits(model, questions))


def sequence_logits(model, questions: Questions) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [model(input_ids=torch.tensor([ids])).logits[0].float().numpy() for ids in questions.sequence_ids]


def greedy_transformers(model, tokenizer, prompts: list[list[int]], decoding: Decoding, batch_size: int) -> list[Answer]:
    import torch
    from transformers import GenerationConfig

    from training.generation import left_pad, length_sorted_batches

    config = GenerationConfig(do_sample=False, max_new_tokens=decoding.max_new_tokens, eos_token_id=list(decoding.stop_ids),
                              pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                              else decoding.stop_ids[0], repetition_penalty=decoding.repetition_penalty)
    answers: list[Answer] = [Answer([], False)] * len(prompts)
    with torch.inference_mode():
        for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
            ids, mask = left_pad(tokenizer, [prompts[i] for i in batch], model.device)
            output = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            for row, i in enumerate(batch):
                answers[i] = cut_at_stop(output[row, ids.shape[1]:].tolist(), decoding.stop_ids.__contains__)
    return answers


def cut_at_stop(tokens: list[int], is_stop) -> Answer:
    """Tokens up to the first stop token (kept); what follows it in a batch is padding."""
    for k, token in enumerate(tokens):
        if is_stop(token):
            return Answer(tokens[:k + 1], True)
    return Answer(tokens, False)


def logit_gap(reference: list[np.ndarray], test: list[np.ndarray]) -> dict:
    gap = LogitGap()
    for ref, found in zip(reference, test):
        gap.add(ref, found)
    return {k: v for k, v in gap.summary().items() if k != "nmse"}


def near_ties(model, prompts: list[list[int]], reference: list[Answer], test: list[Answer], decoding: Decoding,
               tolerance: float) -> list[dict]:
    """Where each differing answer first diverges: `model`'s margin between its own token and the reference's
    there (repetition penalty applied, as in decoding), and whether that is within `tolerance` (a near-tie)."""
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    penalty = RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty) if decoding.repetition_penalty != 1.0 else None
    found = []
    with torch.inference_mode():
        for i, (a, b) in enumerate(zip(reference, test)):
            if a.ids == b.ids:
                continue
            k = next((k for k, (x, y) in enumerate(zip(a.ids, b.ids)) if x != y), None)
            if k is None:  # one answer a prefix of the other: no two tokens to weigh
                found.append({"question": i, "position": min(len(a.ids), len(b.ids)), "margin": None, "tie": False})
                continue
            ids = torch.tensor([prompts[i] + a.ids[:k]])
            scores = model(input_ids=ids).logits[:, -1].float()
            scores = penalty(ids, scores) if penalty else scores
            margin = float(scores[0, b.ids[k]] - scores[0, a.ids[k]])
            found.append({"question": i, "position": k, "margin": margin, "tie": margin <= tolerance})
    return found


def greedy_agreement(reference: list[Answer], test: list[Answer]) -> dict:
    same = sum(a.ids == b.ids for a, b in zip(reference, test))
    return {"greedy_equal": same, "greedy_questions": len(reference),
            "hit_token_limit": sum(not a.stopped for a in test),
            # ran to the limit where the reference stopped: the stop token did not travel
            "runaway": sum(b.stopped and not a.stopped for a, b in zip(test, reference))}


# ---------------------------------------------------------------- llama.cpp


def open_gguf(path: Path, n_ctx: int):
    from training.export_gguf import threads
    from training.export_runtime import load_llama_cpp

    llama_cpp = load_llama_cpp()
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True,
                           n_threads=threads(), seed=0, verbose=False)


def run_gguf(path: Path, tokenizer, questions: Questions, decoding: Decoding, merged: ModelRun) -> tuple[dict, list[Answer]]:
    """Template tokens, logit NMSE against the merged model, greedy answers and where they stop."""
    from training.export_runtime import load_llama_cpp

    lib = load_llama_cpp()
    longest = max(max(len(s) for s in questions.sequence_ids),
                  max(len(p) for p in questions.prompt_ids) + decoding.max_new_tokens)
    llm = open_gguf(path, n_ctx=longest + 8)
    try:
        report = {"template": check_template(llm, tokenizer, questions.conversations)}
        gap = LogitGap()
        for ids, reference in zip(questions.sequence_ids, merged.logits):
            llm.reset()
            llm.eval(ids)
            gap.add(reference, np.array(llm.scores[:len(ids)]))
        report["logits"] = gap.summary()
        vocab = llm._model.vocab
        answers = [greedy_gguf(llm, prompt, decoding, lambda t: lib.llama_vocab_is_eog(vocab, t))
                   for prompt in questions.prompt_ids]
        detokenized = sum(llm.detokenize(a.ids).decode("utf-8", errors="replace") ==
                          tokenizer.decode(a.ids, skip_special_tokens=True) for a in answers)
    finally:
        llm.close()
    stops = [a.ids[-1] for a in answers if a.stopped]
    report["greedy"] = {**greedy_agreement(merged.answers, answers), "detokenized_equal": detokenized,
                        "stopped_at_end_of_turn": sum(t == decoding.end_of_turn for t in stops),
                        "stopped_elsewhere": sum(t not in decoding.stop_ids for t in stops)}
    return report, answers


def greedy_gguf(llm, prompt: list[int], decoding: Decoding, is_end) -> Answer:
    tokens = []
    llm.reset()
    for token in llm.generate(prompt, temp=0.0, repeat_penalty=decoding.repetition_penalty, reset=True):
        tokens.append(token)
        if is_end(token):
            return Answer(tokens, True)
        if len(tokens) == decoding.max_new_tokens:
            break
    return Answer(tokens, False)


def check_template(llm, tokenizer, conversations: list[list[dict]]) -> dict:
    """Prompt tokens when llama.cpp renders the template stored in the GGUF, against the transformers
    tokenizer's (the tokens the adapter was trained and evaluated on), on every conversation.

    llama.cpp (llama-server, llama-cli) renders the stored template with Jinja, drops a leading BOS from
    the text when the model adds one itself, and tokenizes with special tokens parsed (common/chat.cpp);
    the rendering here is llama-cpp-python's Jinja formatter, the tokenizing llama.cpp's. Also counted:
    the prompts of llama.cpp's built-in templates (`llama_chat_apply_template`, used without Jinja), which
    recognise a template by its text and so may render another format.
    """
    import llama_cpp as lib
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    model = llm._model
    template = llm.metadata.get("tokenizer.chat_template")
    if template is None:
        return {"conversations": len(conversations), "equal": 0, "problem": "the GGUF stores no chat template"}
    bos, eos = model.token_get_text(model.token_bos()), model.token_get_text(model.token_eos())
    adds_bos = lib.llama_vocab_get_add_bos(model.vocab)
    render = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos, add_generation_prompt=True)
    equal, builtin_equal, first_difference = 0, 0, None
    for messages in conversations:
        expected = tokenizer(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))["input_ids"]
        text = render(messages=messages).prompt
        if adds_bos and text.startswith(bos):
            text = text[len(bos):]
        got = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        equal += got == expected
        if got != expected and first_difference is None:
            first_difference = difference(expected, got, tokenizer)
        builtin = builtin_template_prompt(model, messages)
        builtin_equal += builtin is not None and llm.tokenize(builtin.encode("utf-8"), add_bos=True, special=True) == expected
    return {"conversations": len(conversations), "equal": equal, "first_difference": first_difference,
            "builtin_template_equal": builtin_equal}


def builtin_template_prompt(model, messages: list[dict]) -> str | None:
    """The prompt from llama.cpp's built-in template matching the stored one (None: none matches)."""
    import ctypes

    import llama_cpp as lib

    chat = (lib.llama_chat_message * len(messages))(
        *[lib.llama_chat_message(role=m["role"].encode(), content=m["content"].encode()) for m in messages])
    template = lib.llama_model_chat_template(model.model, None)
    size = lib.llama_chat_apply_template(template, chat, len(messages), True, None, 0)
    if size < 0:
        return None
    buffer = ctypes.create_string_buffer(size + 1)
    lib.llama_chat_apply_template(template, chat, len(messages), True, buffer, size + 1)
    return buffer.value.decode("utf-8")


def difference(expected: list[int], got: list[int], tokenizer) -> dict:
    at = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    return {"position": at, "transformers": tokenizer.convert_ids_to_tokens(expected[at:at + 5]),
            "llama_cpp": tokenizer.convert_ids_to_tokens(got[at:at + 5])}


# ---------------------------------------------------------------- quality and targets


def rouge_l(answers: dict[str, list[str]], references: list[str], resamples: int, confidence: float, seed: int) -> dict:
    """ROUGE-L of each model's answers, with its BCa interval and the paired difference against the adapter's."""
    from training import metrics as M

    counts = M.resample_counts(len(references), resamples, seed)
    scores = {name: M.mean(M.rouge_scores(texts, references)["rougeL"]) for name, texts in answers.items()}
    return {name: {**M.bootstrap_ci(stat, counts, confidence),
                   "vs_adapter": None if name == ADAPTER else M.paired_bootstrap(stat, scores[ADAPTER], counts, confidence)}
            for name, stat in scores.items()}


def failures(report: dict) -> list[str]:
    """Every target the report misses, each as a short phrase, with the gated ones first.

    Gated (`GATED`): what says the export is broken rather than merely quantized: the merge, the saved and
    F16 weights' answers and logits, the template and stop tokens of every file. A quantized type's
    fidelity (Q8_0's NMSE, answers running on where the merged model stopped) is a property of that
    quantization of that model: measured against its target and reported, not a reason to drop the files.
    """
    gated, reported = [], []
    if not report[MERGE]["max_abs_diff"] <= MAX_MERGE_LOGIT_DIFF:
        gated.append(f"the merge vs the adapter: max |logit diff| {report[MERGE]['max_abs_diff']:.2e} > "
                     f"{MAX_MERGE_LOGIT_DIFF:g}")
    merged = report[MERGED]
    beyond_ties = [d for d in merged["divergences"] if not d["tie"]]
    if beyond_ties:
        gated.append(f"{MERGED} greedy answers equal on {merged['greedy_equal']}/{merged['greedy_questions']}, "
                     f"{len(beyond_ties)} diverging beyond a near-tie (questions "
                     f"{', '.join(str(d['question']) for d in beyond_ties)})")
    for name, checks in [(MERGED, merged), *((t, r["greedy"]) for t, r in report["gguf"].items())]:
        missed = gated if name in GATED else reported
        need = math.ceil(MIN_GREEDY_SHARE.get(name, 0) * checks["greedy_questions"])
        if checks["greedy_equal"] < need:
            missed.append(f"{name} greedy answers equal on {checks['greedy_equal']}/{checks['greedy_questions']} (< {need})")
        if checks["runaway"]:
            missed.append(f"{name}: {checks['runaway']} answers ran to the token limit where the reference stopped")
    for name, result in report["gguf"].items():
        template = result["template"]
        if template["equal"] != template["conversations"]:
            gated.append(f"{name} chat template tokens equal on {template['equal']}/{template['conversations']} "
                         f"conversations (first difference {template.get('first_difference') or template.get('problem')})")
        if name in MAX_NMSE and not result["logits"]["nmse"] <= MAX_NMSE[name]:
            (gated if name in GATED else reported).append(
                f"{name} logit NMSE {result['logits']['nmse']:.2e} > {MAX_NMSE[name]:g}")
        if result["greedy"]["detokenized_equal"] != result["greedy"]["greedy_questions"]:
            gated.append(f"{name}: llama.cpp detokenizes {result['greedy']['greedy_questions'] - result['greedy']['detokenized_equal']}"
                         " answers to other text than the tokenizer does")
        if result["greedy"]["stopped_elsewhere"]:
            gated.append(f"{name}: {result['greedy']['stopped_elsewhere']} answers stopped at a token that is not a stop token")
    return gated, reported


# ---------------------------------------------------------------- the whole check


def decoding_of(generation, tokenizer) -> Decoding:
    """Greedy decoding with the adapter's saved settings (a sampling adapter is checked greedily too)."""
    from training.chat import end_of_turn

    stops = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    return Decoding(generation.max_new_tokens, generation.repetition_penalty or 1.0, tuple(stops),
                    tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)))


def verify_export(load_adapter, merged_dir: Path, gguf_paths: dict[str, Path], questions: Questions, tokenizer,
                  decoding: Decoding, intervals: dict) -> tuple[dict, list[dict]]:
    """The report (`failures`: gated targets missed; `missed_quantized_targets`: the others) and one row of
    answers per question.

    `load_adapter()` returns the adapter on its base (unmerged); `intervals`: resamples, confidence, seed.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = load_adapter()
    adapter = run_transformers(model, tokenizer, questions, decoding)
    merge = logit_gap(adapter.logits, sequence_logits(model.merge_and_unload(), questions))
    del model
    merged_model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    merged = run_transformers(merged_model, tokenizer, questions, decoding)
    merged_gap = logit_gap(adapter.logits, merged.logits)
    divergences = near_ties(merged_model, questions.prompt_ids, adapter.answers, merged.answers, decoding,
                            NEAR_TIE_GAPS * merged_gap["max_abs_diff"])
    del merged_model
    report = {"questions": {"n": len(questions.ids), "ids": questions.ids, "conversations": len(questions.conversations)},
              "decoding": {"greedy": True, "max_new_tokens": decoding.max_new_tokens,
                           "repetition_penalty": decoding.repetition_penalty, "stop_token_ids": list(decoding.stop_ids),
                           "end_of_turn_id": decoding.end_of_turn},
              "reference": "logits: float32 on the CPU, prompt + reference answer teacher-forced",
              MERGE: merge,  # the float32 merge, before the weights are rounded to 16 bits
              MERGED: {**merged_gap, **greedy_agreement(adapter.answers, merged.answers), "divergences": divergences},
              "gguf": {}}
    adapter.logits.clear()
    answers = {ADAPTER: adapter.answers, MERGED: merged.answers}
    for quant_type, path in gguf_paths.items():
        report["gguf"][quant_type], answers[quant_type] = run_gguf(path, tokenizer, questions, decoding, merged)
    texts = {name: [tokenizer.decode(a.ids, skip_special_tokens=True).strip() for a in found]
             for name, found in answers.items()}
    report["rougeL"] = rouge_l(texts, questions.references, intervals["resamples"], intervals["confidence"],
                               intervals["seed"])
    report["targets"] = {"merge_max_abs_logit_diff": MAX_MERGE_LOGIT_DIFF, "nmse": MAX_NMSE,
                         "greedy_share": MIN_GREEDY_SHARE, "template_tokens": "equal on every conversation",
                         "merged_greedy": f"equal, or diverging at a near-tie (margin <= {NEAR_TIE_GAPS} x max |logit diff|)",
                         "runaway": 0}
    report["failures"], report["missed_quantized_targets"] = failures(report)
    rows = [{"id": questions.ids[i], "question": questions.questions[i], "reference": questions.references[i],
             "answers": {name: {"text": texts[name][i], "tokens": len(found[i].ids), "stopped": found[i].stopped}
                         for name, found in answers.items()}}
            for i in range(len(questions.ids))]
    return report, rows
