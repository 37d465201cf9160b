"""Generation speed on a GPU: evaluation (batched greedy answers on the test prompts) and the Space
(one user, streamed).

TinyLlama-1.1B's architecture with random weights and a LoRA adapter with random non-zero weights,
loaded as evaluation loads it (`training.generation.load_model`: adapter merged into the bf16
base). A random model never emits eos, so every answer runs to `max_new_tokens`: the worst case.

Evaluation: `training.generation.generate` (length-sorted, left-padded batches) at several batch
sizes, then the same batches with a static KV cache (transformers compiles the decode step).
Space: the Space's call (TextIteratorStreamer in a thread, repetition_penalty 1.1, a stop
criterion); time to first token and streamed tokens/s, with the default and a static cache.

    python bench/bench_generate_gpu.py --out bench/results/generate.json
    python bench/bench_generate_gpu.py --tiny --device cpu --prompts 8 --max-new-tokens 8 --batch-sizes 4 --out /tmp/g.json
"""
from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    environment, load_flashcards, peak_memory_gb, random_base_model, synchronize,
)
from training.atomic import write_json_atomic  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizer")
    parser.add_argument("--model-config", type=Path, default=SHARED / "tokenizer")
    parser.add_argument("--flashcards", type=Path, default=SHARED / "flashcards" / "medical_flashcards_test_3396.json")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-generate"))
    parser.add_argument("--prompts", type=int, default=512, help="test prompts answered per variant")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the chat contract's default")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256, 512],
                        help="16 is `evaluate`'s default; a batch size answers at most 4 batches of prompts")
    parser.add_argument("--static-batch-size", type=int, default=256, help="0 skips the static-cache variant")
    parser.add_argument("--stream-runs", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    from training.chat import format_prompt, load_tokenizer
    from training.config import DEFAULT_SYSTEM_PROMPT
    from training.generation import load_model

    tokenizer = load_tokenizer(args.tokenizer)
    base_dir, adapter_dir = prepare_models(args, tokenizer)
    precision = "bf16" if device.type == "cuda" else "fp32"
    model, tokenizer = load_model(str(base_dir), None, adapter_dir, precision=precision)
    rows = load_flashcards(args.flashcards)[-args.prompts:]  # the file's tail, as a stand-in test split
    prompts = [format_prompt(tokenizer, DEFAULT_SYSTEM_PROMPT, r["question"]) for r in rows]

    results = {"environment": environment(), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
               "evaluation": {}, "space": {}}
    for batch_size in args.batch_sizes:
        results["evaluation"][f"dynamic_b{batch_size}"] = guarded(
            lambda: eval_generation(model, tokenizer, prompts[:4 * batch_size], batch_size, args.max_new_tokens,
                                    device))
        write_json_atomic(args.out, results)
    if args.static_batch_size:
        results["evaluation"][f"static_compiled_b{args.static_batch_size}"] = guarded(
            lambda: eval_generation(model, tokenizer, prompts, args.static_batch_size, args.max_new_tokens, device,
                                    cache_implementation="static", warm=True))
        write_json_atomic(args.out, results)
    question = rows[0]["question"]
    for cache in (None, "static"):
        results["space"][cache or "dynamic"] = guarded(
            lambda: stream_latency(model, tokenizer, format_prompt(tokenizer, DEFAULT_SYSTEM_PROMPT, question),
                                   args.max_new_tokens, args.stream_runs, cache))
        write_json_atomic(args.out, results)
    print_table(results)
    return 0


def prepare_models(args, tokenizer) -> tuple[Path, Path]:
    """Random base + random adapter (non-zero B, so merging changes the weights), with tokenizer files."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.config import LoraSettings

    base_dir = args.work_dir / "base"
    adapter_dir = args.work_dir / "adapter"
    if not (base_dir / "config.json").exists():
        random_base_model(args.model_config, base_dir, tiny=args.tiny)
    if not (adapter_dir / "adapter_config.json").exists():
        lora = LoraSettings()
        model = AutoModelForCausalLM.from_pretrained(str(base_dir))
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
        torch.manual_seed(1)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.01)
        model.save_pretrained(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
        del model
    return base_dir, adapter_dir


def guarded(measure) -> dict:
    try:
        return measure()
    except Exception as exc:  # one variant failing (compile, OOM) must not lose the others
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


def eval_generation(model, tokenizer, prompts, batch_size, max_new_tokens, device, cache_implementation=None,
                    warm=False) -> dict:
    """generated tokens/s over the whole prompt set, as `training.generation.generate` batches it."""
    from training import generation

    run = generate_with_cache(cache_implementation) if cache_implementation else generation.generate
    warm_s = None
    if warm:  # a full untimed pass first: every batch shape compiles once; reported separately
        synchronize(device)
        start = time.perf_counter()
        run(model, tokenizer, prompts, batch_size, max_new_tokens)
        synchronize(device)
        warm_s = round(time.perf_counter() - start, 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    answers = run(model, tokenizer, prompts, batch_size, max_new_tokens)
    synchronize(device)
    seconds = time.perf_counter() - start
    generated = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    budget = len(prompts) * max_new_tokens  # no eos from random weights: every answer is max_new_tokens long
    return {"batch_size": batch_size, "seconds": round(seconds, 3), "generated_tokens": budget,
            "tokens_per_s": round(budget / seconds, 1), "retokenized_answer_tokens": generated,
            "warmup_seconds": warm_s, "peak_memory_gb": peak_memory_gb(device)}


def generate_with_cache(cache_implementation: str):
    """`training.generation.generate` with one generate() option changed."""
    from training import generation

    def run(model, tokenizer, prompts, batch_size, max_new_tokens):
        original = model.generate

        def patched(*args, **kwargs):
            return original(*args, cache_implementation=cache_implementation, **kwargs)

        model.generate = patched
        try:
            return generation.generate(model, tokenizer, prompts, batch_size, max_new_tokens)
        finally:
            del model.generate

    return run


def stream_latency(model, tokenizer, prompt, max_new_tokens, runs, cache_implementation) -> dict:
    """The Space's call: TextIteratorStreamer in a thread, greedy, repetition_penalty 1.1, a stop criterion."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    class Never(StoppingCriteria):  # as the Space's Stop button criterion when not pressed
        def __call__(self, input_ids, scores, **kwargs):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    class TimedStreamer(TextIteratorStreamer):
        """Records when each generated token reaches the streamer (text pieces lag a few tokens)."""

        def put(self, value):
            self.token_times.append(time.perf_counter())
            super().put(value)

    ids = torch.tensor([tokenizer(prompt)["input_ids"]], device=model.device)
    extra = {"cache_implementation": cache_implementation} if cache_implementation else {}
    measurements = []
    for attempt in range(runs + 1):  # the first run warms up (and compiles, for the static cache)
        streamer = TimedStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        streamer.token_times = []
        start = time.perf_counter()
        thread = threading.Thread(target=lambda: model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
            stopping_criteria=StoppingCriteriaList([Never()]), pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.1, **extra))
        thread.start()
        first_text = None
        for piece in streamer:
            if piece and first_text is None:
                first_text = time.perf_counter()
        thread.join()
        times = streamer.token_times[1:]  # the first put() is the prompt
        measurements.append({
            "ttft_ms": (times[0] - start) * 1e3, "first_text_ms": (first_text - start) * 1e3 if first_text else None,
            "tokens": len(times), "stream_tokens_per_s": (len(times) - 1) / (times[-1] - times[0]),
            "total_s": times[-1] - start,
        })
    timed = measurements[1:]
    median = lambda key: round(sorted(m[key] for m in timed)[len(timed) // 2], 2)  # noqa: E731
    return {"runs": len(timed), "prompt_tokens": ids.shape[1], "ttft_ms": median("ttft_ms"),
            "first_text_ms": median("first_text_ms"), "stream_tokens_per_s": median("stream_tokens_per_s"),
            "tokens": timed[0]["tokens"], "warmup_total_s": round(measurements[0]["total_s"], 2)}


def print_table(results) -> None:
    print(f"\nevaluation generation: {results['prompts']} prompts x {results['max_new_tokens']} new tokens")
    for name, r in results["evaluation"].items():
        print(f"  {name:24} " + (f"ERROR {r['error'][:90]}" if "error" in r else
                                 f"{r['tokens_per_s']:>10,.0f} tok/s  {r['seconds']:>7.2f} s  peak {r['peak_memory_gb']} GB"
                                 f"  warm-up {r['warmup_seconds']}"))
    print("space, one user, streamed:")
    for name, r in results["space"].items():
        print(f"  {name:24} " + (f"ERROR {r['error'][:90]}" if "error" in r else
                                 f"TTFT {r['ttft_ms']:.1f} ms (first text {r['first_text_ms']} ms), "
                                 f"{r['stream_tokens_per_s']:.1f} tok/s streamed"))


if __name__ == "__main__":
    raise SystemExit(main())
