"""`python -m training export`: a trained adapter as a merged model and GGUF files, checked against the
adapter before they are kept.

    python -m training export                                      # runs/best.json's experiment
    python -m training export --set experiments=exp1,exp2 --set formats=F16,Q8_0,Q4_K_M,Q5_K_M

Each experiment goes to exports/<name>/, swapped in whole once complete and verified (an earlier export
stays until then; a failure or Ctrl-C leaves it as it was):
  merged/                    the adapter merged into its base, 16-bit safetensors, with the adapter's
                             tokenizer and chat template, generation_config.json and chat_contract.json
  gguf/<name>-<TYPE>.gguf    F16 by llama.cpp's converter, quantized types by llama.cpp's quantizer
  export.json                what made it and what it holds (run, adapter and base hashes, versions,
                             files, sizes, seconds per format)
  verification.json          the checks against the adapter (training/export_verify.py) and the targets
  answers.jsonl              each test question's greedy answer from the adapter and every export
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from pydantic import Field, field_validator

from common.atomic import check_replaceable, replace_dir, write_json_atomic
from common.errors import EnvironmentProblem, VerificationError
from common.yaml_config import StrictModel
from training.config import CONFIG_DIR
from training.export_gguf import DEFAULT_TYPES, F16

EXPORT_FORMAT = 1
MANIFEST, VERIFICATION, ANSWERS = "export.json", "verification.json", "answers.jsonl"
MERGED_DIR, GGUF_DIR = "merged", "gguf"
DISK_MARGIN = 64 * 2**20


class ExportConfig(StrictModel):
    """`python -m training export` (configs/export.yaml, optional)."""

    runs_dir: Path = Field(Path("runs"), description="trained experiments: runs_dir/<name>/; runs_dir/best.json names the best")
    output_dir: Path = Field(Path("exports"), description="each experiment's export goes to output_dir/<name>/")
    experiments: list[str] | None = Field(
        None, description="experiments to export (a list or comma-separated); None: the best (runs_dir/best.json)")
    formats: list[str] = Field(list(DEFAULT_TYPES), description="GGUF types (a list or comma-separated): F16, always "
                               "written, and llama.cpp quantization types (Q8_0, Q6_K, Q5_K_M, Q4_K_M, ...)")
    merged_dtype: str = Field("float16", pattern="^(float16|bfloat16|float32)$",
                              description="the merged weights' type (the merge is computed in float32; float32 weights "
                              "keep its logits exactly, at twice the size)")
    verify: bool = Field(True, description="check the export against the adapter and keep it only if it meets the targets")
    questions: int = Field(32, gt=0, description="test questions answered and scored by the verification")
    split: str = Field("test", description="split of the run's prepared data the verification uses")
    bootstrap_resamples: int = Field(1000, gt=0, description="resamples of the ROUGE-L intervals")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the ROUGE-L intervals")
    seed: int = Field(42, description="seed of the bootstrap resamples")

    @field_validator("experiments", "formats", mode="before")
    @classmethod
    def _comma_separated(cls, v):  # --set formats=F16,Q8_0
        return [name.strip() for name in v.split(",") if name.strip()] if isinstance(v, str) else v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="reads CONFIG_DIR/export.yaml when present")
    parser.add_argument("--config", type=Path, help="an export YAML file (default: CONFIG_DIR/export.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an ExportConfig setting, e.g. --set experiments=exp1 --set formats=F16,Q8_0 "
                        "(repeatable)")


def run(args: argparse.Namespace) -> int:
    from common.yaml_config import load_config

    path = args.config or (args.config_dir / "export.yaml")
    config = load_config(ExportConfig, path if args.config or path.exists() else None, args.set)
    for name in planned_experiments(config):
        folder = export_experiment(config, name)
        print(summary(folder))
    return 0


def planned_experiments(config: ExportConfig) -> list[str]:
    """The named experiments (or the best), each checked before any is exported."""
    from training.export_gguf import check_types
    from training.export_merge import best_experiment, read_run

    names = config.experiments or [best_experiment(config.runs_dir)]
    check_types(config.formats)
    for name in names:
        read_run(config.runs_dir, name)
        check_replaceable(config.output_dir / name)
    return names


def export_experiment(config: ExportConfig, name: str) -> Path:
    """exports/<name>/, written beside the old one and swapped in when complete (and verified)."""
    from training.export_gguf import check_types, convert, file_name, quantize
    from training.export_merge import check_base, merged_model, read_run, save_merged
    from training.export_runtime import converter_script, load_llama_cpp

    run = read_run(config.runs_dir, name)
    types = check_types(config.formats)
    destination = Path(config.output_dir) / name
    check_replaceable(destination)
    converter_script()
    load_llama_cpp()  # the runtime is there before minutes of work, not after
    base_check = check_base(run)

    def fill(tmp: Path) -> None:
        started = time.perf_counter()
        model = merged_model(run)
        check_disk(destination, sum(p.numel() for p in model.parameters()), types, config.merged_dtype)
        save_merged(model, run, tmp / MERGED_DIR, config.merged_dtype)
        del model
        seconds = {MERGED_DIR: time.perf_counter() - started}
        gguf = tmp / GGUF_DIR
        gguf.mkdir()
        f16 = gguf / file_name(name, F16)
        end_of_turn, space_at_start = tokenizer_facts(run.adapter_dir)
        seconds[F16] = convert(tmp / MERGED_DIR, f16, end_of_turn, name, space_at_start)
        for quant_type in types[1:]:
            seconds[quant_type] = quantize(f16, gguf / file_name(name, quant_type), quant_type)
        write_json_atomic(tmp / MANIFEST, manifest(run, config, tmp, types, seconds, base_check))
        if config.verify:
            verify_folder(tmp, run, config)

    print(f"[{name}] exporting {run.adapter_dir} to {destination} ({', '.join(types)})")
    return replace_dir(destination, fill)


def tokenizer_facts(adapter_dir: Path) -> tuple[int, bool]:
    """What the converter is told of the adapter's tokenizer: the end-of-turn id, and whether its '▁' goes at
    the start of the text only (training/export_gguf.space_at_start_only)."""
    from training.chat import end_of_turn
    from training.export_gguf import space_at_start_only
    from training.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(adapter_dir)
    return tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer)), space_at_start_only(tokenizer)


def check_disk(destination: Path, parameters: int, types: list[str], merged_dtype: str) -> None:
    """Room for the whole new export beside the old one (which stays until the new one is complete)."""
    from training.export_gguf import estimated_bytes

    parent = destination.parent
    merged = parameters * (4 if merged_dtype == "float32" else 2)
    sizes = {"merged": merged, **{t: estimated_bytes(parameters, t) for t in types}}
    needed, free = sum(sizes.values()) + DISK_MARGIN, shutil.disk_usage(parent).free
    if free < needed:
        shown = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in sizes.items())
        raise EnvironmentProblem(f"not enough disk for {destination}: about {needed / 2**30:.2f} GiB needed ({shown} GiB), "
                                 f"{free / 2**30:.2f} GiB free in {parent}; free some space or set output_dir elsewhere")


def manifest(run, config: ExportConfig, folder: Path, types: list[str], seconds: dict, base_check: str) -> dict:
    from training.chat import end_of_turn, read_generation_config
    from training.tokenizer import load_tokenizer
    from training.export_gguf import describe, file_name, sha256_text
    from training.export_runtime import runtime_versions
    from training.provenance import sha256_file, stamp

    tokenizer = load_tokenizer(folder / MERGED_DIR)
    merged_files = sorted(p for p in (folder / MERGED_DIR).iterdir() if p.is_file())
    provenance = run.run.provenance()
    return {
        "format": EXPORT_FORMAT,
        "experiment": run.name,
        "adapter": {"path": str(run.adapter_dir), "sha256": sha256_file(run.adapter_dir / "adapter_model.safetensors"),
                    "trained": {"quantization": run.quantization, "precision": run.training_precision},
                    "data": provenance.get("data"), "code": provenance.get("code")},
        "base_model": {**run.base, "check": base_check},
        "merge": {"computed_in": "float32", "saved_as": config.merged_dtype,
                  "base_weights": "NF4, dequantized before merging (QLoRA)" if run.quantization == "nf4" else "as trained"},
        "chat": {"end_of_turn": end_of_turn(tokenizer), "stop_token_ids": read_generation_config(folder / MERGED_DIR).eos_token_id,
                 "chat_template_sha256": sha256_text(tokenizer.chat_template)},
        "merged": {"folder": MERGED_DIR, "bytes": sum(p.stat().st_size for p in merged_files),
                   "files": {p.name: p.stat().st_size for p in merged_files}, "seconds": round(seconds[MERGED_DIR], 2)},
        "gguf": {t: {**describe(folder / GGUF_DIR / file_name(run.name, t)), "seconds": round(seconds[t], 2),
                     "made_by": "llama.cpp convert_hf_to_gguf" if t == F16 else "llama.cpp llama_model_quantize from F16"}
                 for t in types},
        "runtime": runtime_versions(),
        "provenance": stamp(),
    }


def verify_folder(folder: Path, run, config: ExportConfig) -> dict:
    """Check the export in `folder` against its adapter; write verification.json and answers.jsonl there.
    A missed target is a VerificationError (exit 6), so the export is not kept."""
    from training import export_verify as V
    from training.chat import read_contract
    from training.tokenizer import load_tokenizer
    from training.export_merge import load_adapter_model

    tokenizer = load_tokenizer(folder / MERGED_DIR)
    contract = read_contract(run.adapter_dir)
    questions = V.load_questions(run.config.data_dir, config.split, config.questions, tokenizer, contract.system_prompt)
    report, rows = V.verify_export(
        lambda: load_adapter_model(run), folder / MERGED_DIR,
        {t: folder / GGUF_DIR / f for t, f in gguf_files(folder).items()}, questions, tokenizer,
        V.decoding_of(contract.generation, tokenizer),
        {"resamples": config.bootstrap_resamples, "confidence": config.confidence, "seed": config.seed})
    write_json_atomic(folder / VERIFICATION, report)
    with open(folder / ANSWERS, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    for missed in report["missed_quantized_targets"]:
        print(f"[{run.name}] note: {missed} (reported in {VERIFICATION}; quantized files are kept)")
    if report["failures"]:
        raise VerificationError(f"{config.output_dir / run.name}: export not kept, {len(report['failures'])} target(s) "
                                f"missed: {'; '.join(report['failures'])}")
    return report


def gguf_files(folder: Path) -> dict[str, str]:
    manifest_data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    return {t: entry["file"] for t, entry in manifest_data["gguf"].items()}


def card_facts(folder: Path, repo_id: str | None = None) -> dict:
    """What a GGUF repo's card says, from the export folder alone: types, files, sizes, quality against the
    adapter, and how to run each file (`repo_id`: the GGUF repo on the Hub)."""
    from training.export_verify import ADAPTER, MERGED

    data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    verification = Path(folder) / VERIFICATION
    checks = json.loads(verification.read_text(encoding="utf-8")) if verification.is_file() else None
    facts = []
    for quant_type, entry in data["gguf"].items():
        fact = {"type": quant_type, "file": entry["file"], "bytes": entry["bytes"], "tensor_types": entry["tensor_types"],
                "made_by": entry["made_by"]}
        if checks:
            fact.update(logits=checks["gguf"][quant_type]["logits"], greedy=checks["gguf"][quant_type]["greedy"],
                        rougeL=checks["rougeL"][quant_type])
        if repo_id:
            fact["run"] = {"llama.cpp": f"llama-cli -hf {repo_id}:{quant_type}",
                           "ollama": f"ollama run hf.co/{repo_id}:{quant_type}"}
        facts.append(fact)
    return {"experiment": data["experiment"], "base_model": data["base_model"], "adapter": data["adapter"],
            "merged_bytes": data["merged"]["bytes"], "gguf": facts,
            "merged_vs_adapter": checks[MERGED] if checks else None,
            "adapter_rougeL": checks["rougeL"][ADAPTER] if checks else None}


def summary(folder: Path) -> str:
    facts = card_facts(folder)
    lines = [f"wrote {folder}: merged {facts['merged_bytes'] / 2**20:.0f} MiB"]
    for fact in facts["gguf"]:
        line = f"  {fact['file']}: {fact['bytes'] / 2**20:.0f} MiB"
        if "rougeL" in fact:
            paired = fact["rougeL"]["vs_adapter"]
            line += (f", NMSE {fact['logits']['nmse']:.1e}, greedy {fact['greedy']['greedy_equal']}/"
                     f"{fact['greedy']['greedy_questions']} as merged, ROUGE-L {fact['rougeL']['value']:.3f} "
                     f"({paired['diff']:+.3f} [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}] vs adapter)")
        lines.append(line)
    return "\n".join(lines)
