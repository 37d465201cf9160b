"""The releases of the best experiment's export (exports/<exp>/, `make export`): its merged weights and its GGUF
files, each on branch `<prefix><exp>` of its own repo, then `main` of both once the pushed commits pass
hub/verify_export.py. Which export is published is decided once, when the inputs are read (`find_export`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.errors import DataError
from hub.export_cards import GGUF, MERGED, ExportWhere, export_card
from hub.releases import SCRATCH_MARGIN_BYTES, Context, ExperimentRelease, Release
from hub.revisions import Files, Revisions, folder_files, size_of
from training.export import GGUF_DIR, MANIFEST, MERGED_DIR, VERIFICATION, gguf_files
from training.layout import RunDir

OLLAMA_PARAMS = "params"  # the Hub's file of Ollama parameters in a GGUF repo (JSON)


def find_export(folder: Path, run: RunDir, required: bool | None) -> Path | None:
    """exports/<best>/ when it is a verified export of the adapter as it is now; else None, said in one line
    (`required` None), or a DataError before anything is pushed (`required` True)."""
    problem = export_problem(folder, run)
    if problem is None:
        return folder
    if required:
        raise DataError(f"{problem}; hub.yaml says publish_exports: true (run `make export`, or set it to false)")
    print(f"exports not published: {problem} (run `make export`; publish_exports: false in hub.yaml says not to)",
          file=sys.stderr)
    return None


def export_problem(folder: Path, run: RunDir) -> str | None:
    from training.provenance import sha256_file

    manifest = folder / MANIFEST
    if not manifest.is_file():
        return f"{folder} holds no export of {run.name}"
    exported = json.loads(manifest.read_text(encoding="utf-8"))["adapter"]["sha256"]
    if exported != sha256_file(run.adapter / "adapter_model.safetensors"):
        return f"{folder} was exported from another adapter than {run.adapter} (trained again since)"
    verification = folder / VERIFICATION
    if not verification.is_file():
        return f"{folder} was exported unverified (verify=false)"
    if json.loads(verification.read_text(encoding="utf-8"))["failures"]:
        return f"{folder} failed its verification"
    return None


def export_releases(adapter: ExperimentRelease, folder: Path) -> list[Release]:
    branches = [ExportBranch(MERGED, adapter, folder), ExportBranch(GGUF, adapter, folder)]
    check = PushedCheck(*branches)
    return [*branches, *(ExportPromotion(branch, check) for branch in branches)]


class ExportBranch(Release):
    """Branch `<prefix><exp>` of the merged repo (MERGED: exports/<exp>/merged/) or of the GGUF repo (GGUF: the
    .gguf files at its root, named <exp>-<TYPE>.gguf as `llama-cli -hf repo:TYPE` and `ollama run
    hf.co/repo:TYPE` look them up, with `params` for Ollama); both with export.json, verification.json and a card."""

    def __init__(self, kind: str, adapter: ExperimentRelease, folder: Path):
        self.kind, self.adapter, self.folder = kind, adapter, folder
        self.revision = adapter.revision

    def adapter_commit(self, ctx: Context) -> str:
        return ctx.commits.get(self.adapter.name, self.adapter.revision)

    def files(self, ctx: Context) -> Files:
        if self.kind == MERGED:
            files = folder_files(self.folder / MERGED_DIR)
        else:
            files = {name: self.folder / GGUF_DIR / name for name in gguf_files(self.folder).values()}
            files[OLLAMA_PARAMS] = ollama_params(self.folder / MERGED_DIR)
        files.update({MANIFEST: self.folder / MANIFEST, VERIFICATION: self.folder / VERIFICATION})
        files["README.md"] = str(self.card(ctx)).encode("utf-8")
        return files

    def card(self, ctx: Context, **details):
        from training.chat import read_contract

        where = ctx.where()
        exp = self.adapter.experiment
        return export_card(self.kind, self.folder, ExportWhere(
            ctx.ids[MERGED], ctx.ids[GGUF], ctx.ids["adapter"], self.adapter_commit(ctx), self.adapter.revision,
            where.base_model(exp), where.license, read_contract(self.folder / MERGED_DIR).system_prompt))

    def message(self, ctx: Context) -> str:
        what = "merged weights" if self.kind == MERGED else "GGUF files"
        return f"{self.adapter.experiment.name}: {what} of adapter commit {self.adapter_commit(ctx)[:12]}"


class PushedCheck:
    """hub/verify_export.py on both branches' pushed commits, run once for the two promotions."""

    def __init__(self, merged: ExportBranch, gguf: ExportBranch):
        self.merged, self.gguf = merged, gguf
        self.report: dict | None = None

    def size(self, ctx: Context) -> int:
        """The fresh download: the merged weights, the GGUF files, the adapter."""
        return sum(size_of(b.files(ctx)) for b in (self.merged, self.gguf)) + \
            size_of(folder_files(self.merged.adapter.experiment.run.adapter)) + SCRATCH_MARGIN_BYTES

    def run(self, ctx: Context, hub: Revisions) -> dict:
        from hub.verify_export import Pushed, verify_exports

        if self.report is None:
            pushed = lambda branch: Pushed(ctx.repo(branch), ctx.commits[branch.name])  # noqa: E731
            exp = self.merged.adapter.experiment
            self.report = verify_exports(
                pushed(self.merged), pushed(self.gguf), Pushed(ctx.ids["adapter"], self.merged.adapter_commit(ctx)),
                exp.base_model, ctx.inputs.data_dir, ctx.config.export_verify_questions, hub.token)
        return self.report


class ExportPromotion(Release):
    """`main` of the merged or the GGUF repo = its branch's files, once both pushed branches passed the check."""

    revision = "main"

    def __init__(self, source: ExportBranch, check: PushedCheck):
        self.source, self.check = source, check
        self.kind = source.kind

    def size(self, ctx: Context) -> int:
        return self.check.size(ctx)

    def files(self, ctx: Context) -> Files:
        return self.source.files(ctx)

    def verify(self, ctx: Context, hub: Revisions) -> None:
        self.check.run(ctx, hub)

    def message(self, ctx: Context) -> str:
        commit = ctx.commits.get(self.source.name, self.source.revision)
        return f"Promote {self.source.adapter.experiment.name} ({commit[:12]}), verified"


def ollama_params(merged: Path) -> bytes:
    """Ollama's parameters for the files (the Hub serves them with `ollama run hf.co/...`): the adapter's stop
    tokens and greedy decoding settings, from the merged folder's generation_config.json."""
    from training.chat import read_generation_config
    from training.tokenizer import load_tokenizer

    generation, tokenizer = read_generation_config(merged), load_tokenizer(merged)
    stops = generation.eos_token_id if isinstance(generation.eos_token_id, list) else [generation.eos_token_id]
    params = {"stop": tokenizer.convert_ids_to_tokens(stops), "num_predict": generation.max_new_tokens,
              "repeat_penalty": generation.repetition_penalty or 1.0}
    if not generation.do_sample:
        params["temperature"] = 0.0
    return (json.dumps(params, indent=2) + "\n").encode("utf-8")
