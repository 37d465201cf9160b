"""A trained run, its base, and the merged model: the adapter folded into the base's weights.

The base must be the weights the adapter was trained on, as the run's provenance.json records them (a
Hub id at a revision, or a local folder and the sha256 of its weight files); other weights are refused.
A QLoRA adapter was trained on the base's NF4 weights: the base is loaded in NF4 as training loaded it
and dequantized, then the adapter merged (peft's advice; merging into the original float weights adds the
adapter to weights it never saw, and merging into 4-bit weights rounds a light fine-tune away). The
merge is computed in float32 and saved in 16-bit (by default), with the adapter's tokenizer (and chat template),
generation_config.json and chat_contract.json: the same chat contract as the adapter.
"""
from __future__ import annotations

import difflib
import shutil
from dataclasses import dataclass
from pathlib import Path

from common.errors import ConfigError, DataError, EnvironmentProblem
from training.config import ExperimentConfig
from training.layout import RunDir, RunsDir

SENTENCEPIECE_MODEL = "tokenizer.model"

@dataclass(frozen=True)
class TrainedRun:
    """What export reads from runs/<name>/ (training/layout.py)."""

    run: RunDir
    config: ExperimentConfig
    base: dict  # provenance.json "base_model": id, revision (and weights_sha256 for a local folder)
    quantization: str  # how the base was loaded in training: "nf4" (QLoRA) or "none"
    training_precision: str  # "bf16", "fp16" or "fp32"

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def run_dir(self) -> Path:
        return Path(self.run.path)

    @property
    def adapter_dir(self) -> Path:
        return self.run.adapter


def best_experiment(runs_dir: Path) -> str:
    runs = RunsDir(runs_dir)
    name = runs.best()
    if name is None:
        raise ConfigError(f"no trained run to export: {runs.best_file} is missing (run `make train` first, or name "
                          "the experiments with --set experiments=...)")
    return name


def read_run(runs_dir: Path, name: str) -> TrainedRun:
    """runs/<name>/ as `train` left it: the adapter, its config, metrics and provenance."""
    runs = RunsDir(runs_dir)
    run = runs.run(name)
    if not run.is_trained():
        known = [r.name for r in runs.trained()]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"trained runs: {', '.join(known) or 'none'}"
        raise ConfigError(f"no trained run '{name}' in {runs_dir} (no {run.adapter}; {hint})")
    config = run.config()
    hardware = run.metrics().get("hardware") or {}
    base = run.provenance().get("base_model") or {}
    if (base.get("id"), base.get("revision")) != (config.base_model, config.base_model_revision):
        raise DataError(f"{run.path}: {run.provenance_file.name} names base {base.get('id')}@{base.get('revision')}, "
                        f"{run.config_file.name} {config.base_model}@{config.base_model_revision}; the run folder "
                        "was edited")
    return TrainedRun(run, config, base, hardware.get("quantization", "none"), hardware.get("precision", "fp32"))


def check_base(run: TrainedRun) -> str:
    """The base is the one the adapter was trained on; how that is known (said on the export)."""
    from training.provenance import base_model_record

    recorded = run.base
    if "weights_sha256" not in recorded:
        if recorded.get("revision") is None and Path(run.config.base_model).is_dir():
            print(f"[{run.name}] note: {run.run.provenance_file} has no hash of the base's weights (trained "
                  f"before they were recorded); {run.config.base_model} is taken as it is")
            return "unverified: the run recorded no hash of the base's weight files"
        from training.preflight import check_base_model

        check_base_model(run.config)  # a Hub id at the recorded revision: there, or a one-line Hub error
        return f"Hub revision {recorded.get('revision')}, as trained"
    folder = Path(run.config.base_model)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"the base {folder} that {run.name} was trained on is missing (no {folder / 'config.json'}); "
                          "export merges into exactly those weights: rebuild or restore that folder")
    now = base_model_record(str(folder), None)["weights_sha256"]
    if now != recorded["weights_sha256"]:
        changed = sorted(set(now) ^ set(recorded["weights_sha256"]) |
                         {f for f in now if now[f] != recorded["weights_sha256"].get(f)})
        raise DataError(f"the base {folder} is not the one {run.name} was trained on: {', '.join(changed)} "
                        f"differ from the sha256 in {run.run.provenance_file}; merging into other weights "
                        "would not reproduce the adapter (restore that base, or retrain)")
    return "weight files' sha256 equal to the run's provenance"


def load_base(run: TrainedRun):
    """The base in float32 on the CPU: as trained, or for QLoRA its NF4 weights dequantized."""
    import torch
    from transformers import AutoModelForCausalLM

    from common.hub_errors import hub_errors

    revision = run.config.base_model_revision
    with hub_errors(run.config.base_model, revision, "cannot load base model"):
        if run.quantization != "nf4":
            return AutoModelForCausalLM.from_pretrained(run.config.base_model, revision=revision, dtype=torch.float32)
        from training.device import torch_dtype
        from training.trainer import nf4_quantization

        if not torch.cuda.is_available():
            raise EnvironmentProblem(f"{run.name} was trained with QLoRA: merging needs its NF4 base, which "
                                     "bitsandbytes loads on a CUDA GPU; export it on a GPU machine")
        compute = torch_dtype(run.training_precision)
        quantized = AutoModelForCausalLM.from_pretrained(
            run.config.base_model, revision=revision, dtype=compute, quantization_config=nf4_quantization(compute),
            device_map={"": 0})
    return quantized.dequantize(dtype=torch.float32).cpu()


def load_adapter_model(run: TrainedRun):
    """The adapter on its base, unmerged (float32, CPU): what the merged model must reproduce."""
    from peft import PeftModel

    return PeftModel.from_pretrained(load_base(run), str(run.adapter_dir)).eval()


def merged_model(run: TrainedRun):
    """The adapter merged into its base, still float32."""
    return load_adapter_model(run).merge_and_unload()


def save_merged(model, run: TrainedRun, folder: Path, dtype: str) -> None:
    """The merged weights in `dtype`, with the adapter's tokenizer, generation_config.json and chat contract
    (and the base's SentencePiece model, when it has one)."""
    import torch

    from training.chat import CONTRACT_FILE, read_generation_config
    from training.tokenizer import load_tokenizer

    model = model.to(getattr(torch, dtype))
    model.generation_config = read_generation_config(run.adapter_dir)  # the adapter's decoding, stop tokens included
    model.save_pretrained(folder)
    load_tokenizer(run.adapter_dir).save_pretrained(folder)  # with its chat template
    shutil.copyfile(run.adapter_dir / CONTRACT_FILE, folder / CONTRACT_FILE)
    sentencepiece = sentencepiece_model(run)
    if sentencepiece is not None:
        shutil.copyfile(sentencepiece, folder / SENTENCEPIECE_MODEL)
    for path in folder.iterdir():
        path.chmod(0o644)  # safetensors writes owner-only files; a model folder is for everyone to read


def sentencepiece_model(run: TrainedRun) -> Path | None:
    """The base's SentencePiece model (TinyLlama's tokenizer.model), which transformers 5 does not save with
    the adapter. llama.cpp's converter reads the token scores from it; without it a Llama tokenizer is
    converted with placeholder scores and llama.cpp splits words differently (the template check sees it)."""
    from common.hub_ids import is_hub_id

    base = run.config.base_model
    if not is_hub_id(base):
        path = Path(base) / SENTENCEPIECE_MODEL
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from common.hub_errors import hub_errors

    with hub_errors(base, run.config.base_model_revision, f"cannot download {SENTENCEPIECE_MODEL} of"):
        try:
            return Path(hf_hub_download(base, SENTENCEPIECE_MODEL, revision=run.config.base_model_revision))
        except EntryNotFoundError:  # a byte-level BPE base (SmolLM2) has none
            return None
