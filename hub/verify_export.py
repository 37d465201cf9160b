"""Prove pushed exports work before `main` of their repos points at them (as hub/verify.py does for an adapter).

The merged repo and the GGUF repo are downloaded at the pushed commits into a fresh, temporary cache, the
adapter at its pushed commit is loaded onto its base with peft as its card says, and `export`'s own checks
(training/export_verify.py) run on what came back: the merged weights against the adapter (logits, greedy
answers), each GGUF through llama.cpp (the prompt tokens from its stored template, logit NMSE against the
merged model, greedy answers, where they stop). A missed gated target, or any failure on the way, is a
VerificationError (exit 6): nothing moves.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from common.errors import VerificationError
from hub.verify import fresh_cache, load_adapter

GGUF_TYPE = re.compile(r"-([A-Z0-9_]+)\.gguf$")  # <experiment>-<TYPE>.gguf (training/export_gguf.file_name)
INTERVALS = {"resamples": 200, "confidence": 0.95, "seed": 42}  # the ROUGE-L intervals here are not gated


@dataclass(frozen=True)
class Pushed:
    repo: str
    commit: str

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit[:12]}"


def verify_exports(merged: Pushed, gguf: Pushed, adapter: Pushed, base: tuple[str, str | None], data_dir: Path,
                   questions: int, token: str | None) -> dict:
    """The verification report of the pushed exports (training/export_verify.verify_export's)."""
    with fresh_cache(f"{merged}, {gguf}", merged.repo, merged.commit, token) as cache:
        report = _check(merged, gguf, adapter, base, data_dir, questions, token, cache)
    if report["failures"]:
        raise VerificationError(f"{merged}, {gguf} failed verification, not promoted: {'; '.join(report['failures'])}")
    return report


def _check(merged: Pushed, gguf: Pushed, adapter: Pushed, base, data_dir, questions, token, cache) -> dict:
    from huggingface_hub import snapshot_download

    from training import export_verify as V
    from training.chat import read_contract
    from training.tokenizer import load_tokenizer

    merged_dir = Path(snapshot_download(merged.repo, revision=merged.commit, cache_dir=cache, token=token))
    gguf_dir = Path(snapshot_download(gguf.repo, revision=gguf.commit, cache_dir=cache, token=token,
                                      allow_patterns=["*.gguf"]))
    files = {m.group(1): path for path in sorted(gguf_dir.glob("*.gguf")) if (m := GGUF_TYPE.search(path.name))}
    if not files:
        raise FileNotFoundError(f"no <name>-<TYPE>.gguf file in {gguf}")
    tokenizer = load_tokenizer(merged_dir)
    contract = read_contract(merged_dir)
    asked = V.load_questions(data_dir, "test", questions, tokenizer, contract.system_prompt)

    report, _ = V.verify_export(lambda: load_adapter(adapter.repo, adapter.commit, *base, token, cache), merged_dir,
                                files, asked, tokenizer, V.decoding_of(contract.generation, tokenizer), INTERVALS)
    return report
