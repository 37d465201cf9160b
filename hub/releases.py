"""What a push publishes, as a list of releases that the publisher runs in order.

A release is one revision this project writes: its target (repo and branch), its exact files with
its card as README.md (`files`: what `--dry-run` writes and what a commit holds, the local files
streamed from runs/ and eval/, never copied), the verification that gates it, and the room it needs
in TMPDIR (`size`): the dataset, one branch per experiment, the promotion of the best experiment's
branch to `main`, and that experiment's export (merged weights, GGUF files: hub/export_releases.py).
"""
from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field

from common.errors import HubError
from hub.artifacts import Experiment, Inputs
from hub.cards import EVAL_FOLDER, Where, adapter_card, dataset_card
from hub.config import HubConfig
from hub.revisions import Files, Revisions, folder_files, size_of
from training.layout import BASE

# Room in TMPDIR beyond a verified revision's own files (the download cache's bookkeeping).
SCRATCH_MARGIN_BYTES = 2**20


@dataclass
class Pushed:
    """One line of the summary table."""

    repo: str
    branch: str
    commit: str
    changed: bool


@dataclass
class Context:
    """What every release reads: the settings, the local inputs, the repo ids, and the commits the
    releases before it published (a dry run commits nothing: there, a branch stands for its commit)."""

    config: HubConfig
    inputs: Inputs
    ids: dict[str, str] = field(default_factory=dict)  # dataset / adapter / space -> repo id
    commits: dict[str, str] = field(default_factory=dict)  # release name -> commit

    def __post_init__(self):
        # Until the token says whose they are (hub.auth.preflight_config), and in a dry run.
        self.ids = self.ids or self.config.repo_ids(self.config.namespace or "your-namespace")

    def where(self) -> Where:
        config = self.config
        return Where(self.ids["adapter"], self.ids["dataset"], self.commits.get(DatasetRelease.name),
                     config.branch_prefix, config.license, config.base_model_repo, config.base_model_revision)

    def repo(self, release: Release) -> str:
        return self.ids[release.kind]


class Release:
    """One revision: `kind` (which repo of hub.yaml), `revision` (the branch written), `name` (how the
    summary and later releases call it)."""

    kind = "adapter"
    revision = "main"
    repo_type = "model"

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.revision}"

    def size(self, ctx: Context) -> int:
        """Bytes this release needs in TMPDIR while it publishes (its files are streamed, not staged)."""
        return 0

    def files(self, ctx: Context) -> Files:
        raise NotImplementedError

    def card(self, ctx: Context, **details):
        raise NotImplementedError

    def verify(self, ctx: Context, hub: Revisions) -> None:
        """Raise VerificationError when what this revision would point at does not work; nothing moves then."""

    def publish(self, ctx: Context, hub: Revisions) -> list[Pushed]:
        """Commit `files` unless the branch holds them already (then nothing is verified or committed)."""
        repo, files = ctx.repo(self), self.files(ctx)
        before = hub.head(repo, self.revision)
        if before is not None and hub.holds(repo, self.revision, files):
            return [Pushed(repo, self.revision, before, False)]
        with hub.errors(repo, self.revision, "cannot push"):
            validate_card(files["README.md"].decode("utf-8"), f"{repo}@{self.revision}", self.repo_type)
        self.verify(ctx, hub)
        commit = hub.commit(repo, self.revision, files, self.message(ctx))
        return [Pushed(repo, self.revision, commit, commit != before)]

    def message(self, ctx: Context) -> str:
        return f"Update {self.revision}"


def releases(ctx: Context) -> list[Release]:
    """Everything a push publishes, in the order it is published."""
    branches = [ExperimentRelease(exp, ctx.config.branch_prefix + exp.name) for exp in ctx.inputs.experiments]
    best = next((b for b in branches if b.experiment.name == ctx.inputs.best), None)
    planned = [DatasetRelease(), *branches, *([PromotionRelease(best)] if best else [])]
    if best and ctx.inputs.export:
        from hub.export_releases import export_releases

        planned += export_releases(best, ctx.inputs.export)
    return planned


# ---- the dataset --------------------------------------------------------------------------------------

class DatasetRelease(Release):
    """The prepared splits as parquet, and the dataset card."""

    kind = "dataset"
    repo_type = "dataset"
    name = "dataset"

    def files(self, ctx: Context) -> Files:
        from datasets import load_from_disk

        files: Files = {}
        for split, data in load_from_disk(str(ctx.inputs.data_dir)).items():
            buffer = io.BytesIO()
            data.to_parquet(buffer)
            files[f"data/{split}-00000-of-00001.parquet"] = buffer.getvalue()
        files["README.md"] = str(self.card(ctx)).encode("utf-8")
        return files

    def card(self, ctx: Context, **details):
        return dataset_card(ctx.inputs, ctx.where(), details.get("metadata"))

    def publish(self, ctx: Context, hub: Revisions) -> list[Pushed]:
        """`push_to_hub` for the splits (datasets writes the parquet files and their metadata), then the
        card merged into the README it wrote.

        Both commits name their parent; when another commit lands first (412), both are made again
        on the new head. datasets 5.2 means to retry that itself, but misses huggingface_hub 2.x's
        chained error, so the retry is here.
        """
        from common.hub_errors import retry_commit_conflicts

        repo = ctx.repo(self)
        before = hub.head(repo, self.revision, self.repo_type)
        with hub.errors(repo, self.revision, "cannot push the dataset to"):
            info = retry_commit_conflicts(lambda: self._commit(ctx, hub, repo))
        return [Pushed(repo, self.revision, info.oid, info.oid != before)]

    def _commit(self, ctx: Context, hub: Revisions, repo: str):
        from datasets import DatasetDict
        from huggingface_hub import DatasetCard, hf_hub_download

        DatasetDict.load_from_disk(str(ctx.inputs.data_dir)).push_to_hub(
            repo, private=ctx.config.private, token=hub.token, commit_message="Upload prepared splits"
        )
        pushed = hub.head(repo, self.revision, self.repo_type)
        readme = hf_hub_download(repo, "README.md", repo_type=self.repo_type, revision=pushed, token=hub.token)
        card = self.card(ctx, metadata=DatasetCard.load(readme).data.to_dict())
        validate_card(str(card), repo, self.repo_type)  # push_to_hub checks it again, but a rejection there is a bare ValueError
        # upload_file's CommitInfo (a str, the commit URL, with .oid); parent_commit: a race is a 412, retried.
        return card.push_to_hub(repo, token=hub.token, repo_type=self.repo_type, commit_message="Update dataset card",
                                parent_commit=pushed)


# ---- an experiment's branch -------------------------------------------------------------------------------

class ExperimentRelease(Release):
    """Branch `<prefix><experiment>`: the adapter at the root, the run's records, its evaluation
    and the base's (eval/), plots and the card comparing it with the base."""

    def __init__(self, experiment: Experiment, revision: str):
        self.experiment = experiment
        self.revision = revision

    @property
    def name(self) -> str:
        return self.revision

    def stored_files(self, ctx: Context, evaluated: list[Experiment] | None = None) -> Files:
        """The files published as they lie in runs/ and eval/ (a promotion carries the same ones, with the
        evaluation of every experiment)."""
        exp = self.experiment
        files = {**folder_files(exp.run.adapter), **exp.run.records()}
        if exp.eval_metrics is not None:
            files["eval_metrics.json"] = exp.eval.metrics_file
        evaluation = ctx.inputs.evaluation
        for name in [BASE] + [e.name for e in (evaluated or [exp])]:
            files.update({f"{EVAL_FOLDER}/{name}/{file}": path for file, path in evaluation.model(name).files().items()})
        return files

    def files(self, ctx: Context) -> Files:
        from training.plots import loss_curves_png, metrics_png

        exp, inputs = self.experiment, ctx.inputs
        files = self.stored_files(ctx)
        sample = exp.predictions_sample()
        if sample is not None:
            files["predictions_sample.jsonl"] = sample
        # Drawn per branch rather than copied from eval/plots/, so a new experiment does not change the
        # other branches' files.
        files["plots/loss_curves.png"] = loss_curves_png({exp.name: exp.train_metrics})
        results = {name: m for name, m in (("base", inputs.base_eval), (exp.name, exp.eval_metrics)) if m}
        if results:
            confidence = next(iter(results.values())).get("config", {}).get("confidence", 0.95)
            files["plots/metrics.png"] = metrics_png(results, confidence)
        plots = [path for path in files if path.startswith("plots/")]
        files["README.md"] = str(self.card(ctx, plots=plots)).encode("utf-8")
        return files

    def card(self, ctx: Context, **details):
        return adapter_card(self.experiment, ctx.inputs, ctx.where(), branch=self.revision, is_main=False,
                            load_revision=self.revision, plots=details.get("plots", []))

    def message(self, ctx: Context) -> str:
        return f"{self.experiment.name}: adapter, metrics and card"


# ---- the promotion of the best branch to main ---------------------------------------------------------------

class PromotionRelease(Release):
    """`main` = the best experiment's branch, once that branch's commit was downloaded fresh, loaded with
    peft and made to answer; each promotion is tagged best-<N>."""

    revision = "main"

    def __init__(self, source: ExperimentRelease):
        self.source = source

    def size(self, ctx: Context) -> int:
        """Verification downloads the branch's commit into a fresh cache in TMPDIR."""
        return size_of(self.source.stored_files(ctx)) + SCRATCH_MARGIN_BYTES

    def files(self, ctx: Context) -> Files:
        import json

        inputs, best = ctx.inputs, self.source.experiment
        files = self.source.stored_files(ctx, evaluated=inputs.experiments)
        sample = best.predictions_sample()
        if sample is not None:
            files["predictions_sample.jsonl"] = sample
        # The comparison plots `evaluate` drew for every model (eval/plots/) are main's plots.
        files.update({f"plots/{plot.name}": plot for plot in inputs.evaluation.plots()})
        summary = {"best": best.name, "verified_revision": self.verified_revision(ctx),
                   "experiments": {e.name: e.train_metrics.get("best_eval_loss") for e in inputs.experiments}}
        files["experiments.json"] = (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        plots = [path for path in files if path.startswith("plots/")]
        files["README.md"] = str(self.card(ctx, plots=plots)).encode("utf-8")
        return files

    def verified_revision(self, ctx: Context) -> str:
        return ctx.commits.get(self.source.name, self.source.revision)

    def card(self, ctx: Context, **details):
        return adapter_card(self.source.experiment, ctx.inputs, ctx.where(), branch="main", is_main=True,
                            load_revision=self.verified_revision(ctx), plots=details.get("plots", []))

    def verify(self, ctx: Context, hub: Revisions) -> None:
        from hub.verify import verify_revision

        base_id, base_revision = self.source.experiment.base_model
        verify_revision(ctx.repo(self), self.verified_revision(ctx), base_id, base_revision, token=hub.token)

    def message(self, ctx: Context) -> str:
        return f"Promote {self.source.experiment.name} ({self.verified_revision(ctx)[:12]})"

    def publish(self, ctx: Context, hub: Revisions) -> list[Pushed]:
        """Move main (verified first), then tag the move. An earlier push that moved main but failed to tag
        is finished here; a second push at the same time makes neither another commit nor another tag."""
        pushed = super().publish(ctx, hub)
        repo, commit = ctx.repo(self), pushed[0].commit
        message = f"{self.source.experiment.name} verified at {self.verified_revision(ctx)}"
        tag = hub.tag_promotion(repo, self.revision, commit, message)
        if tag is None and hub.head(repo, self.revision) != commit:
            print(f"{repo}@main moved on to another promotion while this one was made; {commit[:12]} is not "
                  "tagged", file=sys.stderr)
        return pushed + ([Pushed(repo, f"tag {tag}", commit, True)] if tag else [])


def validate_card(text: str, where: str, repo_type: str) -> None:
    """The Hub's own card check (metadata schema), before anything is committed."""
    from huggingface_hub import DatasetCard, ModelCard

    card = (DatasetCard if repo_type == "dataset" else ModelCard)(text)
    try:
        card.validate(repo_type=repo_type)
    except ValueError as exc:  # the Hub's 400 answer: the card's metadata is invalid
        raise HubError(f"{where}: the Hub rejected the card: {str(exc).splitlines()[0]}") from None
