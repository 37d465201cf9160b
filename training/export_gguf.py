"""GGUF files of a merged model: F16 by llama.cpp's converter, the quantized types by llama.cpp's own
quantizer from that F16 file (each step in a process of its own: training/export_gguf_tool.py).

The converter stores the tokenizer, the chat template and eos from the model folder's tokenizer files;
the chat contract's end-of-turn token is written as EOT (llama.cpp stops at eos, EOT and the other
end-of-generation tokens it knows). Quantizing copies all of that metadata unchanged.
"""
from __future__ import annotations

import difflib
import os
import subprocess
import sys
import time
from pathlib import Path

from common.errors import ConfigError, EnvironmentProblem

F16 = "F16"
# The types an export can write, with llama.cpp's bits per weight (rounded up; small models keep some
# tensors at a wider type) for the disk check. F16 is always written: the others are made from it.
QUANT_BITS = {
    F16: 16.0, "Q8_0": 8.5, "Q6_K": 6.6, "Q5_K_M": 5.7, "Q5_K_S": 5.6, "Q5_1": 6.0, "Q5_0": 5.5,
    "Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q4_1": 5.0, "Q4_0": 4.5, "Q3_K_L": 4.3, "Q3_K_M": 3.9, "Q3_K_S": 3.5, "Q2_K": 3.4,
}
DEFAULT_TYPES = (F16, "Q8_0", "Q4_K_M")
# llama.cpp's quantizer makes these only with an importance matrix, which an export does not compute.
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K_S")
TOOL = Path(__file__).with_name("export_gguf_tool.py")
FILE_OVERHEAD = 16 * 2**20  # tokenizer and metadata per file


def check_types(types: list[str]) -> list[str]:
    """The requested GGUF types in canonical spelling, F16 first; a type that cannot be made is one line."""
    wanted = []
    for name in types:
        canonical = name.strip().upper()
        if canonical in NEEDS_IMATRIX:
            raise ConfigError(f"GGUF type {name}: llama.cpp makes it only with an importance matrix, which export "
                              f"does not compute; choose one of {', '.join(QUANT_BITS)}")
        if canonical not in QUANT_BITS:
            close = difflib.get_close_matches(canonical, list(QUANT_BITS), n=1)
            hint = f"did you mean {close[0]}?" if close else f"choose from {', '.join(QUANT_BITS)}"
            raise ConfigError(f"GGUF type {name!r} cannot be made by this export ({hint})")
        if canonical not in wanted:
            wanted.append(canonical)
    return [F16, *(t for t in wanted if t != F16)]


def file_name(experiment: str, quant_type: str) -> str:
    """`<experiment>-<TYPE>.gguf`: the type in the name is how `llama-cli -hf repo:TYPE` and
    `ollama run hf.co/repo:TYPE` pick a file from a Hub repo."""
    return f"{experiment}-{quant_type}.gguf"


def estimated_bytes(parameters: int, quant_type: str) -> int:
    return int(parameters * QUANT_BITS[quant_type] / 8 * 1.1) + FILE_OVERHEAD


def threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def convert(model_dir: Path, out: Path, end_of_turn: int, name: str, space_at_start: bool) -> float:
    """F16 GGUF of the merged model folder (`name`: general.name in its metadata); seconds taken.
    `space_at_start`: see space_at_start_only()."""
    from training.export_runtime import converter_script

    return _run_tool("llama.cpp's converter", out, "convert", converter_script().parent, model_dir, out,
                     "--end-of-turn", end_of_turn, "--name", name, *(["--space-at-start-only"] if space_at_start else []))


def space_at_start_only(tokenizer) -> bool:
    """Whether the tokenizer puts SentencePiece's '▁' before the start of the text but not before text that
    follows a special token (TinyLlama's, `legacy: false`; Metaspace `prepend_scheme: first`). llama.cpp's
    SentencePiece tokenizer puts it before both, so such a GGUF is written with its own leading space
    (export_gguf_tool.convert). Asked of the tokenizer itself rather than read from its files: a byte-level
    BPE tokenizer (SmolLM2) adds no '▁' anywhere and is left as it is."""
    def first_piece(text: str) -> str:
        return tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])[-1]

    return first_piece("b").startswith("▁") and not first_piece(tokenizer.eos_token + "b").startswith("▁")


def quantize(source: Path, out: Path, quant_type: str, embedding_type: str | None = None) -> float:
    """`quant_type` from the F16 file (`embedding_type`: the token embedding and output tensors' type); seconds."""
    from training.export_runtime import load_llama_cpp

    load_llama_cpp()  # a missing runtime is said here, not as a failed child process
    extra = ["--embedding-type", embedding_type] if embedding_type else []
    return _run_tool(f"llama.cpp's quantizer ({quant_type})", out,
                     "quantize", source, out, "--type", quant_type, "--threads", threads(), *extra)


def _run_tool(what: str, out: Path, *args) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""})  # the tool's imports are its own
    if done.returncode != 0 or not out.is_file():
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise EnvironmentProblem(f"{what} failed writing {out.name} (exit {done.returncode}): "
                                 f"{lines[-1].strip() if lines else 'no output'}")
    return time.perf_counter() - started


def describe(path: Path) -> dict:
    """What a GGUF file holds, read back with the gguf package: size, tensor types, the chat metadata."""
    from collections import Counter

    import gguf

    reader = gguf.GGUFReader(path)

    def value(key: str):
        field = reader.get_field(key)
        return field.contents() if field is not None else None

    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors).most_common()),
        "architecture": value("general.architecture"),
        "tokenizer": {"model": value("tokenizer.ggml.model"), "pre": value("tokenizer.ggml.pre"),
                      "bos_token_id": value("tokenizer.ggml.bos_token_id"),
                      "eos_token_id": value("tokenizer.ggml.eos_token_id"),
                      "eot_token_id": value("tokenizer.ggml.eot_token_id"),
                      "add_bos_token": value("tokenizer.ggml.add_bos_token"),
                      "add_space_prefix": value("tokenizer.ggml.add_space_prefix")},
        "chat_template_sha256": sha256_text(value("tokenizer.chat_template")),
    }


def sha256_text(text: str | None) -> str | None:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None
