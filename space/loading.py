"""Loading what the Space serves, once at start-up: the adapter snapshot at the commit its revision
resolves to, its chat contract and tokenizer, the base model, and the adapter merged into the base.

The merge happens on CPU and the merged model is then moved to "cuda" at import time when CUDA is
present (ZeroGPU requires both). A failure the Space's owner can fix is a SpaceConfigError naming
the variable or secret to change; the Hub's answer is put in words, never with the token.

"Compare with base" keeps a second, untouched copy of the base model rather than an unmerged
PeftModel with `disable_adapter()`: that context manager flips shared state, so concurrent
requests would race (a fine-tuned answer computed with the adapter off), and the unmerged
model is slower per token. The copy costs one more model in memory (TinyLlama-1.1B: 2.2 GB
in bf16/fp16), which fits ZeroGPU and a T4; set COMPARE_WITH_BASE=0 to skip it.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from assistant import Assistant, register
from config import ChatContract, SpaceConfig, SpaceConfigError


def load_assistant(config: SpaceConfig) -> Assistant:
    """The assistant `config` names, loaded, on its device and reachable from the GPU function."""
    adapter_dir, sha = download_adapter(config.adapter_repo, config.adapter_revision)
    contract = ChatContract.read(adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    if not tokenizer.chat_template:
        raise SpaceConfigError("the adapter's tokenizer files carry no chat template")
    device, dtype = device_and_dtype()
    base, base_sha = load_base(config, dtype)
    untouched_base = copy.deepcopy(base) if config.compare_with_base else None
    tuned = merged_adapter(base, adapter_dir, config)
    models = {"tuned": tuned} | ({"base": untouched_base} if untouched_base is not None else {})
    for model in models.values():
        model.generation_config.max_length = None  # the contract's max_new_tokens governs
        model.to(device).eval()
    return register(Assistant(config=config, adapter_sha=sha, contract=contract, tokenizer=tokenizer, models=models,
                              base_sha=base_sha))


def device_and_dtype() -> tuple[str, torch.dtype]:
    """fp32 on CPU; bf16 on ZeroGPU and Ampere or newer; fp16 on older GPUs such as the T4."""
    if not torch.cuda.is_available():
        return "cpu", torch.float32
    if os.environ.get("SPACES_ZERO_GPU"):  # the GPU is attached per call: cannot be queried here
        return "cuda", torch.bfloat16
    major, _ = torch.cuda.get_device_capability()
    return "cuda", torch.bfloat16 if major >= 8 else torch.float16


def hub_problem(error: Exception) -> str:
    """What a failed Hub request means for the Space's settings, in words (never the token)."""
    token_set = bool(os.environ.get("HF_TOKEN"))
    if isinstance(error, RevisionNotFoundError):
        return "RevisionNotFoundError (no such branch, tag or commit)"
    if isinstance(error, RepositoryNotFoundError):  # the Hub answers a private repo alike
        why = "the HF_TOKEN secret cannot read it" if token_set else "no HF_TOKEN secret is set"
        return f"RepositoryNotFoundError (no such repo, or it is private and {why})"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status == 401:
        return "401 Unauthorized (the HF_TOKEN secret is invalid or expired: replace it with a read token)"
    if status == 403:
        return "403 Forbidden (the HF_TOKEN secret has no access: accept the repo's terms or use another token)"
    return f"{type(error).__name__} (the Hub could not be reached or failed{f', HTTP {status}' if status else ''})"


def download_adapter(repo: str, revision: str) -> tuple[Path, str]:
    """The adapter snapshot at `revision` and the commit sha it resolved to."""
    try:
        sha = HfApi().model_info(repo, revision=revision).sha
        return Path(snapshot_download(repo, revision=sha)), sha
    except (HfHubHTTPError, OSError) as error:  # OSError: connection failures and offline mode
        raise SpaceConfigError(
            f"adapter {repo} @ {revision}: {hub_problem(error)}; check ADAPTER_REPO, ADAPTER_REVISION and HF_TOKEN"
        ) from None


def load_base(config: SpaceConfig, dtype: torch.dtype) -> tuple[torch.nn.Module, str | None]:
    """The base model on CPU and the commit it was loaded at (None for a local folder), like the adapter's;
    a missing repo, folder or revision is a SpaceConfigError."""
    name = f"base model {config.base_model} @ {config.base_revision or 'main'}"
    try:
        sha = None if Path(config.base_model).is_dir() else \
            HfApi().model_info(config.base_model, revision=config.base_revision).sha
        return AutoModelForCausalLM.from_pretrained(config.base_model, revision=sha, dtype=dtype), sha
    except RevisionNotFoundError:
        raise SpaceConfigError(f"{name}: no such revision, or not readable with HF_TOKEN; check BASE_MODEL and "
                               "BASE_REVISION") from None
    except RepositoryNotFoundError:
        raise SpaceConfigError(f"{name}: not found (neither a folder nor a Hub repo), or not readable with HF_TOKEN; "
                               "check BASE_MODEL and BASE_REVISION") from None
    except HfHubHTTPError as error:
        raise SpaceConfigError(f"{name}: {hub_problem(error)}; check BASE_MODEL and BASE_REVISION") from None
    except (OSError, ValueError) as error:  # transformers reports a missing repo or revision as OSError
        what = "no such revision" if "git identifier" in str(error) else "not found (neither a folder nor a Hub repo)"
        raise SpaceConfigError(f"{name}: {what}, or not readable with HF_TOKEN; check BASE_MODEL and "
                               "BASE_REVISION") from None


def merged_adapter(base, adapter_dir: Path, config: SpaceConfig):
    """The adapter merged into `base`, on the device the base is on (the CPU, before any move).

    peft picks the adapter weights' device with `infer_device()`, "cuda" whenever CUDA is
    available, without looking at the base (peft issue #3793): on ZeroGPU, with safetensors >= 0.8,
    loading straight to CUDA at start-up fails. So the device is passed, taken from the base.
    `merge_and_unload()` returns a new model, which the caller then moves.
    """
    try:
        model = PeftModel.from_pretrained(base, adapter_dir, torch_device=str(base.device))
        return model.merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as error:  # wrong base, or a broken adapter
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise SpaceConfigError(f"adapter {config.adapter_repo} does not load onto base model {config.base_model}: "
                               f"{first_line}") from None
