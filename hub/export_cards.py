"""The cards of the exports' repos: the merged weights (`base_model_relation: merge`) and the GGUF files
(`quantized`), built from exports/<exp>/ alone (training.export.card_facts) and the pushed adapter's commit.
Like every card here, nothing comes from the clock or the machine: the same export renders the same bytes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hub.cards import TEMPLATES, check_card, hub_link
from common.hub_ids import is_hub_id

MERGED, GGUF = "merged", "gguf"
TAGS = ["medical", "question-answering", "lora"]
DEFAULT_TYPE = "Q4_K_M"  # what `ollama run hf.co/<repo>` and `llama-cli -hf <repo>` pick without a tag


@dataclass(frozen=True)
class ExportWhere:
    """What an export's card links to: the repos, and the adapter commit the export was made from."""

    merged_repo: str
    gguf_repo: str
    adapter_repo: str
    adapter_commit: str  # the pushed commit of the experiment's branch (its name in a dry run)
    adapter_branch: str
    base: tuple[str, str | None]  # the base as users load it (hub.cards.Where.base_model)
    license: str
    system_prompt: str


def export_card(kind: str, folder: Path, where: ExportWhere):
    """The ModelCard of the merged repo (`kind` MERGED) or of the GGUF repo (GGUF)."""
    from huggingface_hub import ModelCard, ModelCardData

    from training.export import card_facts

    repo = where.merged_repo if kind == MERGED else where.gguf_repo
    facts = card_facts(folder, where.gguf_repo)
    base_id, base_revision = where.base
    card_data = ModelCardData(
        base_model=(base_id if is_hub_id(base_id) else None) if kind == MERGED else where.merged_repo,
        base_model_relation="merge" if kind == MERGED else "quantized",
        library_name="transformers" if kind == MERGED else "gguf",
        pipeline_tag="text-generation",
        language="en",
        license=where.license,
        tags=TAGS + (["merged"] if kind == MERGED else ["gguf", "llama.cpp", "ollama"]),
        model_name=repo.split("/")[-1],
    )
    types = [fact["type"] for fact in facts["gguf"]]
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "export_card.md.j2"),
        kind=kind,
        title=repo.split("/")[-1],
        repo=repo,
        where=where,
        base_id=base_id,
        base_revision=base_revision,
        base_link=hub_link(base_id) if is_hub_id(base_id) else None,
        adapter_link=hub_link(where.adapter_repo),
        merged_link=hub_link(where.merged_repo),
        gguf_link=hub_link(where.gguf_repo),
        facts=facts,
        rows=[gguf_row(fact) for fact in facts["gguf"]],
        default_type=DEFAULT_TYPE if DEFAULT_TYPE in types else types[-1],
        merged_mib=f"{facts['merged_bytes'] / 2**20:.0f}",
        merged_check=merged_check(facts),
        adapter_rouge=rouge_text(facts["adapter_rougeL"]),
    )
    check_card(card, ModelCard)
    return card


def gguf_row(fact: dict) -> dict:
    row = {"type": fact["type"], "file": fact["file"], "mib": f"{fact['bytes'] / 2**20:.0f}", "made_by": fact["made_by"],
           "tensors": ", ".join(f"{count} {name}" for name, count in fact["tensor_types"].items())}
    if "logits" in fact:
        greedy, paired = fact["greedy"], fact["rougeL"]["vs_adapter"]
        row.update(nmse=f"{fact['logits']['nmse']:.1e}", top1=f"{fact['logits']['top1_agreement']:.3f}",
                   greedy=f"{greedy['greedy_equal']}/{greedy['greedy_questions']}",
                   stopped=f"{greedy['greedy_questions'] - greedy['hit_token_limit']}/{greedy['greedy_questions']}",
                   rouge=rouge_text(fact["rougeL"]),
                   vs_adapter=f"{paired['diff']:+.3f} [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}]")
    return row


def rouge_text(metric: dict | None) -> str:
    return f"{metric['value']:.3f} [{metric['ci_low']:.3f}, {metric['ci_high']:.3f}]" if metric else "–"


def merged_check(facts: dict) -> str | None:
    checks = facts["merged_vs_adapter"]
    if not checks:
        return None
    return (f"max |Δlogit| {checks['max_abs_diff']:.1e} against the adapter on {checks['positions']} teacher-forced "
            f"positions; greedy answers equal on {checks['greedy_equal']}/{checks['greedy_questions']}")
