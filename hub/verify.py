"""Prove a pushed adapter revision works before anything points at it.

The revision is downloaded into a fresh, temporary cache (so nothing local can stand in for a
missing or broken file), loaded onto the base with `PeftModel.from_pretrained(base, repo,
revision=sha)` exactly as the model card tells users to, and asked one question, greedily.
"""
from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

from common.errors import VerificationError
from common.hub_errors import explain, first_line, redact

QUESTION = "What is the most common cause of community-acquired pneumonia?"
MAX_NEW_TOKENS = 8


def verify_revision(repo_id: str, revision: str, base_id: str, base_revision: str | None, token: str) -> str:
    """Return the generated answer; raise VerificationError (exit 6) if any step fails."""
    with fresh_cache(f"{repo_id}@{revision[:12]}", repo_id, revision, token) as cache:
        return _load_and_answer(repo_id, revision, base_id, base_revision, token, cache)


@contextlib.contextmanager
def fresh_cache(what: str, repo_id: str, revision: str, token: str | None) -> Iterator[str]:
    """A temporary Hub cache for one verification; any failure inside (download, format, load, generate) is a
    VerificationError naming `what`: "do not promote"."""
    with tempfile.TemporaryDirectory(prefix="verify-") as cache:
        try:
            yield cache
        except Exception as exc:
            hub_failure = explain(exc, repo_id, revision)  # the Hub's part said as every command says it
            detail = "; ".join(hub_failure) if hub_failure else f"{exc.__class__.__name__}: {first_line(exc)}"
            raise VerificationError(f"{what} failed verification, not promoted ({redact(detail, token)})") from None


def load_adapter(repo_id: str, revision: str, base_id: str, base_revision: str | None, token: str | None, cache: str):
    """The pushed adapter on its float32 base, as its card tells users to load it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_id, revision=base_revision, dtype=torch.float32)
    return PeftModel.from_pretrained(base, repo_id, revision=revision, cache_dir=cache, token=token).eval()


def _load_and_answer(repo_id, revision, base_id, base_revision, token, cache) -> str:
    import torch
    from huggingface_hub import snapshot_download

    from training.chat import format_prompt, read_contract
    from training.tokenizer import load_tokenizer

    folder = snapshot_download(repo_id, revision=revision, cache_dir=cache, token=token)
    contract = read_contract(folder)
    tokenizer = load_tokenizer(folder)
    model = load_adapter(repo_id, revision, base_id, base_revision, token, cache)
    inputs = tokenizer(format_prompt(tokenizer, contract.system_prompt, QUESTION), return_tensors="pt")
    # The adapter's own decoding settings (stop tokens included), shortened: verification needs a few tokens.
    greedy = contract.generation
    greedy.update(max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    with torch.inference_mode():
        output = model.generate(**inputs, generation_config=greedy)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    if len(new_tokens) == 0:
        raise RuntimeError("the model generated no tokens")
    return tokenizer.decode(new_tokens, skip_special_tokens=True)
