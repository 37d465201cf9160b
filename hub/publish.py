"""`python -m hub push`: publish the dataset, one adapter branch per experiment, and `main` = best.

Every repo/branch is first staged as a local folder holding exactly its future contents (that is
also what `--dry-run DIR` writes), then committed with `upload_folder`, which skips unchanged
files, so pushing the same artifacts again makes no commit. `main` moves only to a revision whose
adapter was downloaded fresh, loaded with peft and made to answer; each move is tagged `best-<N>`.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.atomic import OWNER_MARKER, replace_dir, write_json_atomic
from common.cli import DISK_ERRNOS
from common.errors import ConfigError, EnvironmentProblem, HubError
from common.hub_errors import hub_errors, retry_commit_conflicts
from hub.artifacts import Experiment, Inputs, load_inputs
from hub.auth import current_token, preflight_config
from hub.cards import Where, adapter_card, dataset_card
from hub.config import HubConfig, load_hub_config
from hub.verify import verify_revision

TAG_PATTERN = re.compile(r"^best-(\d+)$")
ADAPTER_REPO_IGNORE = ["__pycache__", "*.pyc", ".DS_Store", OWNER_MARKER]  # the marker is local bookkeeping
# Room a staged branch needs beyond the run's files: plots, card, eval metrics, predictions sample.
STAGING_MARGIN_BYTES = 8 * 2**20


def add_arguments(parser) -> None:
    parser.add_argument("--config-dir", type=Path, default=Path("configs"), help="folder with hub.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hub.yaml setting")
    parser.add_argument("--dry-run", type=Path, metavar="DIR", help="write each repo/branch's exact contents to DIR instead")
    parser.add_argument("--experiments", help="comma-separated experiments to publish (default: every trained one)")
    parser.add_argument(
        "--check", action="store_true", help="only check the token and write access (run before training that ends in a push)"
    )


@dataclass
class Pushed:
    """One line of the summary table."""

    repo: str
    branch: str
    commit: str
    changed: bool


def run(args) -> int:
    config = load_hub_config(args.config_dir, args.set)
    if args.check:
        repos = preflight_config(config)
        print("Hub access checked: can write to " + ", ".join(repos.values()))
        return 0
    names = [n.strip() for n in args.experiments.split(",") if n.strip()] if args.experiments else None
    if args.experiments is not None and not names:
        raise ConfigError("--experiments: give at least one experiment name, e.g. --experiments lora-r8,lora-r16")
    inputs = load_inputs(config, names)
    if args.dry_run:
        dry_run(config, inputs, args.dry_run)
        return 0
    check_staging_space(inputs, Path(tempfile.gettempdir()))
    publisher = Publisher(config, inputs)
    try:
        publisher.publish()
    finally:  # also after a failed verification: what did move is worth knowing
        print_summary(publisher.results)
    return 0


# ---- staging: the exact contents of each repo/branch ---------------------------------------

def branch_name(config: HubConfig, experiment: str) -> str:
    return f"{config.branch_prefix}{experiment}"


def where_for(config: HubConfig, namespace: str, dataset_revision: str | None) -> Where:
    ids = config.repo_ids(namespace)
    return Where(ids["adapter"], ids["dataset"], dataset_revision, config.branch_prefix, config.license,
                 config.base_model_repo, config.base_model_revision)


def check_staging_space(inputs: Inputs, folder: Path) -> None:
    """Each branch is staged whole in a temporary folder before its commit: refuse before the first commit
    when TMPDIR cannot hold the largest one, rather than fail half-way through the push."""
    needed = STAGING_MARGIN_BYTES + max(
        sum(p.stat().st_size for p in [*exp.adapter_dir.rglob("*"), *(exp.run_dir / name for name in RUN_FILES)]
            if p.is_file()) for exp in inputs.experiments)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise EnvironmentProblem(f"only {free / 2**20:.1f} MiB free in {folder} (TMPDIR), where each branch is staged "
                                 f"before its commit; it needs {needed / 2**20:.1f} MiB: free some space there or set "
                                 "TMPDIR to a folder with room")


def copy_file(src: str, dst: str) -> str:
    """shutil.copy2 for copytree, except that a full disk stops the copy as one clear error (copytree would
    gather it into a shutil.Error, a traceback)."""
    try:
        return shutil.copy2(src, dst)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        raise EnvironmentProblem(f"{exc.strerror} writing {dst}; free some space there, or set TMPDIR (or the "
                                 "--dry-run folder) to a place with room") from None


RUN_FILES = ("config.yaml", "metrics.json", "provenance.json")  # from runs/<exp>/, published as they are


def stage_experiment_files(exp: Experiment, dest: Path) -> None:
    """Adapter files at the root plus the run's records; shared by the branch and `main`."""
    shutil.copytree(exp.adapter_dir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*ADAPTER_REPO_IGNORE),
                    copy_function=copy_file)
    for name in RUN_FILES:
        copy_file(exp.run_dir / name, dest / name)
    if exp.eval_metrics is not None:
        copy_file(exp.eval_dir / "metrics.json", dest / "eval_metrics.json")
    sample = exp.predictions_sample()
    if sample is not None:
        (dest / "predictions_sample.jsonl").write_text(sample, encoding="utf-8")


def stage_eval_files(inputs: Inputs, experiments: list[Experiment], dest: Path) -> None:
    """eval/<model>/ of the base and these experiments, as `evaluate` wrote them: the card's numbers are
    recomputed from exactly these files (hub.cards.EVAL_FOLDER)."""
    from hub.cards import EVAL_FOLDER

    for name in ["base"] + [exp.name for exp in experiments]:
        for file in ("metrics.json", "predictions.jsonl", "medqa.jsonl"):
            source = inputs.eval_dir / name / file
            if source.is_file():
                (dest / EVAL_FOLDER / name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / EVAL_FOLDER / name / file)


def render_plots(exp: Experiment, inputs: Inputs, dest: Path) -> list[str]:
    """Loss curves and metric bars of one experiment (and the base), as repo-relative paths.

    Drawn per branch rather than copied from eval/plots/, so a new experiment does not change
    the other branches' files.
    """
    from training.plots import plot_loss_curves, plot_metrics

    plots = dest / "plots"
    paths = [plot_loss_curves({exp.name: exp.train_metrics}, plots / "loss_curves.png")]
    results = {"base": inputs.base_eval, exp.name: exp.eval_metrics}
    results = {name: m for name, m in results.items() if m}
    if results:
        confidence = next(iter(results.values())).get("config", {}).get("confidence", 0.95)
        paths.append(plot_metrics(results, plots / "metrics.png", confidence=confidence))
    return [Path(p).relative_to(dest).as_posix() for p in paths]


def stage_branch(exp: Experiment, inputs: Inputs, config: HubConfig, where: Where, dest: Path) -> None:
    stage_experiment_files(exp, dest)
    stage_eval_files(inputs, [exp], dest)
    plots = render_plots(exp, inputs, dest)
    branch = branch_name(config, exp.name)
    card = adapter_card(exp, inputs, where, branch=branch, is_main=False, load_revision=branch, plots=plots)
    card.save(dest / "README.md")


def stage_main(best: Experiment, inputs: Inputs, where: Where, verified_revision: str, dest: Path) -> None:
    stage_experiment_files(best, dest)
    stage_eval_files(inputs, inputs.experiments, dest)
    # The comparison plots `evaluate` drew for every model (eval/plots/) are main's plots.
    plots = []
    for plot in inputs.plots:
        (dest / "plots").mkdir(exist_ok=True)
        shutil.copy2(plot, dest / "plots" / plot.name)
        plots.append(f"plots/{plot.name}")
    write_json_atomic(dest / "experiments.json", {
        "best": best.name,
        "verified_revision": verified_revision,
        "experiments": {e.name: e.train_metrics.get("best_eval_loss") for e in inputs.experiments},
    })
    card = adapter_card(best, inputs, where, branch="main", is_main=True, load_revision=verified_revision, plots=plots)
    card.save(dest / "README.md")


def dry_run(config: HubConfig, inputs: Inputs, out: Path) -> None:
    """Write dataset/main, adapter/<branch>... to `out`: a new or empty folder, or an earlier dry run's
    (replaced as a whole, never half-written; any other folder is refused)."""
    from datasets import load_from_disk

    namespace = config.namespace or "your-namespace"
    where = where_for(config, namespace, None)

    def fill(tmp: Path) -> None:
        dataset_dir = tmp / "dataset" / "main"
        for split, data in load_from_disk(str(inputs.data_dir)).items():
            data.to_parquet(str(dataset_dir / "data" / f"{split}-00000-of-00001.parquet"))
        dataset_card(inputs, where).save(dataset_dir / "README.md")
        for exp in inputs.experiments:
            stage_branch(exp, inputs, config, where, tmp / "adapter" / branch_name(config, exp.name))
        if inputs.best:
            best = inputs.experiment(inputs.best)
            stage_main(best, inputs, where, branch_name(config, best.name), tmp / "adapter" / "main")

    out = replace_dir(out.absolute(), fill)  # absolute, not resolve: a symlink is refused, never followed
    print(f"dry run: the contents of {where.dataset_repo}, {where.adapter_repo} are in {out}")


# ---- pushing ----------------------------------------------------------------------------------

class Publisher:
    def __init__(self, config: HubConfig, inputs: Inputs):
        from huggingface_hub import HfApi

        self.config = config
        self.inputs = inputs
        self.token = current_token()
        self.ids = preflight_config(config)
        self.api = HfApi(token=self.token)
        self.results: list[Pushed] = []

    def hub(self, repo: str, revision: str | None, action: str):
        return hub_errors(repo, revision, action, self.token)

    def publish(self) -> list[Pushed]:
        from tqdm.auto import tqdm

        steps = ["dataset"] + [e.name for e in self.inputs.experiments] + (["main"] if self.inputs.best else [])
        with tqdm(total=len(steps), desc="push", unit="step", file=sys.stderr) as bar:
            bar.set_postfix_str("dataset")
            dataset_revision = self.push_dataset()
            bar.update()
            where = where_for(self.config, self.ids["adapter"].split("/")[0], dataset_revision)
            with self.hub(self.ids["adapter"], None, "cannot create"):
                self.api.create_repo(self.ids["adapter"], private=self.config.private, exist_ok=True)
            revisions = {}
            for exp in self.inputs.experiments:
                bar.set_postfix_str(exp.name)
                revisions[exp.name] = self.push_branch(exp, where)
                bar.update()
            if self.inputs.best:
                bar.set_postfix_str("main")
                self.promote(self.inputs.experiment(self.inputs.best), revisions, where)
                bar.update()
        if not self.inputs.best:
            print("main not updated: runs/best.json names none of the experiments pushed", file=sys.stderr)
        return self.results

    def head(self, repo_id: str, revision: str, repo_type: str | None = None) -> str | None:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        with self.hub(repo_id, revision, "cannot read"):
            try:
                return self.api.repo_info(repo_id, repo_type=repo_type, revision=revision).sha
            except (RepositoryNotFoundError, RevisionNotFoundError):
                return None

    def push_dataset(self) -> str:
        """`push_to_hub` for the splits, then the card merged into the README it wrote.

        Both commits name their parent; when another commit lands first (412), both are made again
        on the new head. datasets 5.2 means to retry that itself, but misses huggingface_hub 2.x's
        chained error, so the retry is here.
        """
        repo = self.ids["dataset"]
        before = self.head(repo, "main", "dataset")
        with self.hub(repo, "main", "cannot push the dataset to"):
            info = retry_commit_conflicts(lambda: self.commit_dataset(repo))
        self.results.append(Pushed(repo, "main", info.oid, info.oid != before))
        return info.oid

    def commit_dataset(self, repo: str):
        from datasets import DatasetDict
        from huggingface_hub import DatasetCard, hf_hub_download

        DatasetDict.load_from_disk(str(self.inputs.data_dir)).push_to_hub(
            repo, private=self.config.private, token=self.token, commit_message="Upload prepared splits"
        )
        pushed = self.head(repo, "main", "dataset")
        readme = hf_hub_download(repo, "README.md", repo_type="dataset", revision=pushed, token=self.token)
        metadata = DatasetCard.load(readme).data.to_dict()
        card = dataset_card(self.inputs, where_for(self.config, repo.split("/")[0], None), metadata)
        self.validate(card, repo)  # push_to_hub checks it again, but a rejection there is a bare ValueError
        # upload_file's CommitInfo (a str, the commit URL, with .oid); parent_commit: a race is a 412, retried.
        return card.push_to_hub(repo, token=self.token, repo_type="dataset", commit_message="Update dataset card",
                                parent_commit=pushed)

    def upload(self, repo: str, branch: str, folder: Path, message: str) -> str:
        """Commit `folder` as the whole branch content; returns the head (unchanged if nothing changed)."""
        from huggingface_hub import ModelCard

        before = self.head(repo, branch)
        with self.hub(repo, branch, "cannot push"):
            self.validate(ModelCard.load(folder / "README.md"), f"{repo}@{branch}")
            if before is None:
                self.api.create_branch(repo, branch=branch, exist_ok=True)
            info = self.api.upload_folder(
                repo_id=repo, folder_path=folder, revision=branch, commit_message=message,
                delete_patterns="*", ignore_patterns=ADAPTER_REPO_IGNORE,
            )
        self.results.append(Pushed(repo, branch, info.oid, info.oid != before))
        return info.oid

    def validate(self, card, where: str) -> None:
        """The Hub's own card check (metadata schema), before anything is committed."""
        try:
            card.validate()
        except ValueError as exc:  # the Hub's 400 answer: the card's metadata is invalid
            raise HubError(f"{where}: the Hub rejected the card: {str(exc).splitlines()[0]}") from None

    def push_branch(self, exp: Experiment, where: Where) -> str:
        with tempfile.TemporaryDirectory(prefix="push-") as tmp:
            stage_branch(exp, self.inputs, self.config, where, Path(tmp))
            return self.upload(self.ids["adapter"], branch_name(self.config, exp.name), Path(tmp),
                               f"{exp.name}: adapter, metrics and card")

    def promote(self, best: Experiment, revisions: dict[str, str], where: Where) -> None:
        """Verify the best branch's revision, then move `main` to it and tag the move."""
        repo = self.ids["adapter"]
        revision = revisions[best.name]
        with tempfile.TemporaryDirectory(prefix="push-main-") as tmp:
            stage_main(best, self.inputs, where, revision, Path(tmp))
            if self.matches_remote(repo, "main", Path(tmp)):
                main = self.head(repo, "main")
                if main in self.best_tags(repo).values():
                    self.results.append(Pushed(repo, "main", main, False))
                    return
                # An earlier push promoted (after verifying) but failed to tag: finish its job.
            else:
                base_id, base_revision = best.base_model
                verify_revision(repo, revision, base_id, base_revision, token=self.token)
                main = self.upload(repo, "main", Path(tmp), f"Promote {best.name} ({revision[:12]})")
        tag = f"best-{max(self.best_tags(repo), default=0) + 1}"
        with self.hub(repo, main, "cannot tag"):
            self.api.create_tag(repo, tag=tag, revision=main, tag_message=f"{best.name} verified at {revision}")
        self.results.append(Pushed(repo, f"tag {tag}", main, True))

    def best_tags(self, repo: str) -> dict[int, str]:
        """The promotions so far: N of each best-<N> tag -> the commit it marks."""
        with self.hub(repo, None, "cannot list the refs of"):
            tags = self.api.list_repo_refs(repo).tags
        return {int(m.group(1)): t.target_commit for t in tags if (m := TAG_PATTERN.match(t.name))}

    def matches_remote(self, repo: str, branch: str, folder: Path) -> bool:
        """Whether the branch already holds exactly the folder's files (compared by content hash)."""
        from huggingface_hub.hf_api import RepoFile

        with self.hub(repo, branch, "cannot list"):
            remote = {f.path: f for f in self.api.list_repo_tree(repo, revision=branch, recursive=True)
                      if isinstance(f, RepoFile) and f.path != ".gitattributes"}
        local = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}
        return remote.keys() == local.keys() and all(same_content(remote[k], local[k]) for k in local)


def same_content(remote, path: Path) -> bool:
    from huggingface_hub.utils.sha import git_hash

    data = path.read_bytes()
    if remote.lfs is not None:
        return remote.lfs.sha256 == hashlib.sha256(data).hexdigest()
    return remote.blob_id == git_hash(data)


def print_summary(results: list[Pushed]) -> None:
    rows = [("repo", "branch", "commit", "changed")] + [
        (r.repo, r.branch, (r.commit or "-")[:12], "yes" if r.changed else "no") for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))
