"""Q8_0 with the token embedding / output tensor kept in F16: does it meet the NMSE target (≤ 1e-3), at what size?

Takes an export made by bench/bench_export.py (or `python -m training export`): its merged model and F16 GGUF.
Quantizes Q8_0 twice with llama.cpp's own quantizer, as llama-quantize does it by default and with
`--token-embedding-type F16 --output-tensor-type F16` (llama_model_quantize_params' token_embedding_type /
output_tensor_type; SmolLM2 ties the two, so llama.cpp stores one tensor), and measures each against the merged
model with export's own checks (training/export_verify.py): logit NMSE over every vocabulary logit of every
teacher-forced test position, top-1 agreement, greedy answers.

    .venv/bin/python bench/bench_q8_embedding.py                       # after bench/bench_export.py
    .venv/bin/python bench/bench_q8_embedding.py --questions 8 --export artifacts/bench-export/exports/exp1

Writes bench/results/<date>-q8-embedding-cpu.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from common.atomic import write_json_atomic  # noqa: E402
from training.provenance import hardware, library_versions  # noqa: E402

VARIANTS = {"Q8_0": None, "Q8_0 + F16 embedding/output": "F16"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, default=REPO_ROOT / "artifacts" / "bench-export" / "exports" / "exp1")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "artifacts" / "bench-export" / "data",
                        help="the prepared data the run was trained on (its test split is asked)")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--out", type=Path, help="default bench/results/<date>-q8-embedding-cpu.json")
    args = parser.parse_args(argv)
    out = args.out or REPO_ROOT / "bench" / "results" / f"{datetime.date.today()}-q8-embedding-cpu.json"
    record = {"benchmark": "Q8_0 with and without the token embedding / output tensor in F16, against the merged model",
              "export": str(args.export.relative_to(REPO_ROOT) if args.export.is_relative_to(REPO_ROOT) else args.export),
              "questions": args.questions, "variants": measure(args.export, args.data, args.questions),
              "target_nmse": 1e-3, "hardware": hardware(), "versions": library_versions(),
              "load_average": os.getloadavg()[0]}
    write_json_atomic(out, record)
    print(json.dumps(record["variants"], indent=2))
    return 0


def measure(export: Path, data: Path, questions: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from training import export_verify as V
    from training.chat import read_contract
    from training.export_gguf import describe, quantize
    from training.tokenizer import load_tokenizer

    merged_dir = export / "merged"
    f16 = next((export / "gguf").glob("*-F16.gguf"))
    tokenizer = load_tokenizer(merged_dir)
    contract = read_contract(merged_dir)
    asked = V.load_questions(data, "test", questions, tokenizer, contract.system_prompt)
    decoding = V.decoding_of(contract.generation, tokenizer)
    merged = V.run_transformers(AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32), tokenizer,
                                asked, decoding)
    results = {}
    with tempfile.TemporaryDirectory(prefix="q8-") as tmp:
        for name, embedding_type in VARIANTS.items():
            path = Path(tmp) / f"{'q8-f16emb' if embedding_type else 'q8'}.gguf"
            seconds = quantize(f16, path, "Q8_0", embedding_type)
            report, _ = V.run_gguf(path, tokenizer, asked, decoding, merged)
            facts = describe(path)
            results[name] = {"bytes": facts["bytes"], "tensor_types": facts["tensor_types"], "seconds": round(seconds, 2),
                             "nmse_vs_merged": report["logits"]["nmse"],
                             "top1_agreement": round(report["logits"]["top1_agreement"], 4),
                             "greedy_equal_to_merged": f"{report['greedy']['greedy_equal']}/{report['greedy']['greedy_questions']}",
                             "runaway": report["greedy"]["runaway"],
                             "meets_target": report["logits"]["nmse"] <= V.MAX_NMSE["Q8_0"]}
    results["F16 (reference)"] = {"bytes": f16.stat().st_size}
    return results


if __name__ == "__main__":
    raise SystemExit(main())
