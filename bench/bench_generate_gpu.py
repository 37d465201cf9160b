"""Generation speed on a GPU: evaluation (batched greedy answers on the test prompts) and the Space
(one user, streamed).

TinyLlama-1.1B's architecture with random weights and a LoRA adapter with random non-zero weights,
loaded as evaluation loads it (`training.generation.load_model`: adapter merged into the bf16
base). A random model never emits eos, so every answer runs to `max_new_tokens`: the worst case.

Evaluation: `training.generation.generate` (length-sorted, left-padded batches) with the dynamic
KV cache, then with the static cache it uses on CUDA (transformers compiles the decode step) at
several batch sizes. Space: the Space's own `stream_generation` for one user; time to first text
and streamed tokens/s, with its default fast decode loop (space/decoding.py: static cache, CUDA graph;
`fast_decode_check` says whether its greedy tokens equal `generate`'s), then with FAST_DECODE off:
`generate` with the dynamic cache ("dynamic") and with compiled static-cache steps.

    python bench/bench_generate_gpu.py --out bench/results/generate.json
    python bench/bench_generate_gpu.py --tiny --device cpu --prompts 8 --max-new-tokens 8 --batch-sizes 4 \
        --static-batch-sizes 4 --stream-runs 1 --out /tmp/g.json
"""
from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    environment, load_flashcards, peak_memory_gb, random_base_model, synchronize,
)
from common.atomic import write_json_atomic  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", type=Path, default=SHARED / "tokenizer")
    parser.add_argument("--model-config", type=Path, default=SHARED / "tokenizer")
    parser.add_argument("--flashcards", type=Path, default=SHARED / "flashcards" / "medical_flashcards_test_3396.json")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-generate"))
    parser.add_argument("--prompts", type=int, default=2048, help="test prompts answered per static variant")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the chat contract's default")
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=[256],
                        help="dynamic-cache variants; each answers 2 batches of prompts")
    parser.add_argument("--static-batch-sizes", type=int, nargs="*", default=[256, 512, 1024],
                        help="static-cache variants (`generate`'s path on CUDA), each over all the prompts")
    parser.add_argument("--stream-runs", type=int, default=5)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    from training.chat import format_prompt
    from training.config import DEFAULT_SYSTEM_PROMPT
    from training.device import Device, resolve_precision
    from training.generation import load_model
    from training.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    base_dir, adapter_dir = prepare_models(args, tokenizer)
    precision = resolve_precision("auto", Device.detect(), "bench") if device.type == "cuda" else "fp32"
    model, tokenizer = load_model(str(base_dir), None, adapter_dir, precision=precision)
    rows = load_flashcards(args.flashcards)[-args.prompts:]  # the file's tail, as a stand-in test split
    prompts = [format_prompt(tokenizer, DEFAULT_SYSTEM_PROMPT, r["question"]) for r in rows]

    results = {"environment": environment(), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
               "evaluation": {}, "space": {}}
    for batch_size in args.batch_sizes:
        results["evaluation"][f"dynamic_b{batch_size}"] = guarded(
            lambda: eval_generation(model, tokenizer, prompts[:2 * batch_size], batch_size, args.max_new_tokens,
                                    device, static_cache=False))
        write_json_atomic(args.out, results)
    for batch_size in args.static_batch_sizes:
        results["evaluation"][f"static_b{batch_size}"] = guarded(
            lambda: eval_generation(model, tokenizer, prompts, batch_size, args.max_new_tokens, device,
                                    static_cache=True))
        write_json_atomic(args.out, results)
    question = rows[0]["question"]
    # name -> (FAST_DECODE, cache, compile mode): the Space's default (space/decoding.py), then
    # model.generate eagerly, and with compiled decode steps without and with CUDA graphs
    for name, (fast, cache, mode) in {"fast_decode": (True, None, None), "dynamic": (False, None, None),
                                      "static_compiled": (False, "static", "default"),
                                      "static_cudagraphs": (False, "static", "reduce-overhead")}.items():
        results["space"][name] = guarded(
            lambda: stream_latency(model, tokenizer, adapter_dir, question, args.stream_runs, cache, mode, fast))
        write_json_atomic(args.out, results)
    print_table(results)
    return 0


def prepare_models(args, tokenizer) -> tuple[Path, Path]:
    """Random base + random adapter (non-zero B, so merging changes the weights), with tokenizer files."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.chat import write_contract
    from training.config import DEFAULT_SYSTEM_PROMPT, GenerationConfig, LoraSettings

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
        write_contract(adapter_dir, tokenizer, DEFAULT_SYSTEM_PROMPT, GenerationConfig())  # as training writes it
        del model
    return base_dir, adapter_dir


def guarded(measure) -> dict:
    try:
        return measure()
    except Exception as exc:  # one variant failing (compile, OOM) must not lose the others
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                "where": traceback.format_exc().splitlines()[-4:-1]}


def eval_generation(model, tokenizer, prompts, batch_size, max_new_tokens, device, static_cache: bool) -> dict:
    """generated tokens/s over the whole prompt set, as `training.generation.generate` batches it.

    Static cache: the longest batch_size prompts run first, untimed (`generate`'s first batch has the
    same shapes), so the one-off compile is reported apart from the steady rate.
    """
    from training.generation import generate

    warm_s = None
    if static_cache:
        synchronize(device)
        start = time.perf_counter()
        generate(model, tokenizer, sorted(prompts, key=len, reverse=True)[:batch_size], batch_size, max_new_tokens,
                 static_cache=True)
        synchronize(device)
        warm_s = round(time.perf_counter() - start, 2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    answers = generate(model, tokenizer, prompts, batch_size, max_new_tokens, static_cache=static_cache)
    synchronize(device)
    seconds = time.perf_counter() - start
    generated = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    budget = len(prompts) * max_new_tokens  # no eos from random weights: every answer is max_new_tokens long
    return {"batch_size": batch_size, "static_cache": static_cache, "seconds": round(seconds, 3),
            "generated_tokens": budget, "tokens_per_s": round(budget / seconds, 1),
            "retokenized_answer_tokens": generated, "warmup_seconds": warm_s, "peak_memory_gb": peak_memory_gb(device)}


def load_space_modules() -> SimpleNamespace:
    """The Space's own modules, imported as the Space imports them (space/ on the path)."""
    sys.path.insert(0, str(REPO_ROOT / "space"))
    import assistant
    import config
    import request

    return SimpleNamespace(assistant=assistant, config=config, request=request)


def stream_latency(model, tokenizer, adapter_dir, question, runs, cache_implementation, compile_mode,
                   fast_decode: bool) -> dict:
    """One user of the Space: its own prompt building and `stream_generation` (TextIteratorStreamer on a
    reused thread, the adapter's chat contract: greedy, 256 new tokens), on the merged model.

    TTFT is when the first text piece reaches the caller, as a browser sees it (the streamer releases
    text at word ends). The static-cache variants set `cache_implementation` and `compile_config` on the
    model's generation config. The fast variant also records whether its greedy tokens equal
    `model.generate`'s for the same prompt (`fast_decode_check`).
    """
    from transformers.generation import CompileConfig

    space = load_space_modules()
    helper = space.assistant.register(space.assistant.Assistant(
        config=space.config.SpaceConfig(base_model="bench-base", adapter_repo="bench/adapter", compare_with_base=False,
                                        fast_decode=fast_decode),
        adapter_sha="local", contract=space.config.ChatContract.read(adapter_dir), tokenizer=tokenizer,
        models={"tuned": model}))
    _, prompt = space.request.check_input(helper, question, [])
    model.generation_config.cache_implementation = cache_implementation
    model.generation_config.compile_config = CompileConfig(mode=compile_mode) if compile_mode else None
    measurements = []
    try:
        for _ in range(runs + 1):  # the first run warms up (and compiles, for the static cache)
            start = time.perf_counter()
            first = None
            for piece in space.assistant.stream_generation(helper.key, "tuned", prompt.input_ids):
                if first is None:
                    first = time.perf_counter()
            end = time.perf_counter()
            tokens = helper.stats.last_new_tokens
            measurements.append({"ttft_ms": (first - start) * 1e3, "tokens": tokens, "total_s": end - start,
                                 "tokens_per_s": tokens / (end - start),
                                 "stream_tokens_per_s": (tokens - 1) / (end - first)})
    finally:
        model.generation_config.cache_implementation = model.generation_config.compile_config = None
        del space.assistant._LOADED[helper.key]
    timed = measurements[1:]
    median = lambda key: round(sorted(m[key] for m in timed)[len(timed) // 2], 2)  # noqa: E731
    result = {"runs": len(timed), "prompt_tokens": len(prompt.input_ids), "tokens": timed[0]["tokens"],
              "ttft_ms": median("ttft_ms"), "stream_tokens_per_s": median("stream_tokens_per_s"),
              "tokens_per_s_incl_ttft": median("tokens_per_s"), "warmup_total_s": round(measurements[0]["total_s"], 2)}
    if fast_decode:
        result["fast_decode_check"] = fast_decode_check(space, model, helper, prompt.input_ids)
    return result


def fast_decode_check(space, model, helper, input_ids) -> dict:
    """The fast loop's greedy tokens against `model.generate`'s for the same prompt and settings,
    with the CUDA graph and with the same decoder stepping eagerly: graph != eager points at the
    capture. generate's default dynamic cache can differ in bf16 (attention over a masked static
    cache rounds differently: on an H200, bf16 generate itself differed between its dynamic and
    static caches from token 15, fp32 did not), so the exact reference is generate with a static
    cache, uncompiled."""
    import copy

    from transformers import TextIteratorStreamer

    decoding, generation = space.assistant.decoding, helper.contract.generation
    ids = torch.tensor([input_ids], device=model.device)
    capacity = helper.contract.max_input_tokens + generation.max_new_tokens
    settings = decoding.decode_settings(generation, model)

    def fast(decoder) -> list[int]:
        streamer = TextIteratorStreamer(helper.tokenizer, skip_prompt=True)
        return decoder.generate(ids, settings, streamer, threading.Event()).new_ids

    pool = decoding.pool_state(model)  # the decoder(s) the timed runs used
    static = copy.deepcopy(generation)
    static.cache_implementation, static.disable_compile = "static", True
    with torch.inference_mode():
        expected, expected_static = (
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)[
                0, ids.shape[-1]:].tolist() for config in (generation, static))
    decoder = decoding.Decoder(model, capacity)
    graphed = fast(decoder)
    decoder.graph = None  # the same cache and buffers, stepped eagerly
    eager = fast(decoder)
    same_prefix = next((i for i, (a, b) in enumerate(zip(graphed, expected)) if a != b),
                       min(len(graphed), len(expected)))
    return {"greedy_equals_generate_static_cache": graphed == expected_static,
            "greedy_equals_generate": graphed == expected, "matching_prefix_tokens": same_prefix,
            "tokens": len(graphed), "graph_equals_eager": graphed == eager,
            "eager_equals_generate": eager == expected,
            "cuda_graph_captured": pool["cuda_graphs"] > 0, "pool": pool}


def print_table(results) -> None:
    print(f"\nevaluation generation: {results['prompts']} prompts x {results['max_new_tokens']} new tokens")
    for name, r in results["evaluation"].items():
        print(f"  {name:24} " + (f"ERROR {r['error'][:90]}" if "error" in r else
                                 f"{r['tokens_per_s']:>10,.0f} tok/s  {r['seconds']:>7.2f} s  peak {r['peak_memory_gb']} GB"
                                 f"  warm-up {r['warmup_seconds']}"))
    print("space, one user, streamed:")
    for name, r in results["space"].items():
        print(f"  {name:24} " + (f"ERROR {r['error'][:90]}" if "error" in r else
                                 f"TTFT {r['ttft_ms']:.1f} ms, {r['stream_tokens_per_s']:.1f} tok/s streamed, "
                                 f"{r['tokens']} tokens"))
        if "fast_decode_check" in r:
            print(f"  {'':24} {r['fast_decode_check']}")


if __name__ == "__main__":
    raise SystemExit(main())
