"""`python -m hub push`: publish the dataset, one adapter branch per experiment, `main` = best, and the best
experiment's export (merged weights and GGUF files, each repo's `main` moved once verified at its pushed commit).

The publisher runs the releases of hub/releases.py in order: each commits its revision's exact files
(unchanged files are no change, so pushing the same artifacts again makes no commit), `main` moves
only to a revision whose adapter was downloaded fresh, loaded with peft and made to answer, and each
move is tagged `best-<N>`. `--dry-run DIR` writes the same files to DIR instead.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from common.atomic import replace_dir
from common.cli import DISK_ERRNOS
from common.errors import ConfigError, EnvironmentProblem
from hub.artifacts import load_inputs
from hub.auth import current_token, preflight_config
from hub.config import load_hub_config
from hub.releases import Context, Pushed, Release, releases
from hub.revisions import Files, Revisions


def add_arguments(parser) -> None:
    parser.add_argument("--config-dir", type=Path, default=Path("configs"), help="folder with hub.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a hub.yaml setting")
    parser.add_argument("--dry-run", type=Path, metavar="DIR", help="write each repo/branch's exact contents to DIR instead")
    parser.add_argument("--experiments", help="comma-separated experiments to publish (default: every trained one)")
    parser.add_argument(
        "--check", action="store_true", help="only check the token and write access (run before training that ends in a push)"
    )


def run(args) -> int:
    config = load_hub_config(args.config_dir, args.set)
    if args.check:
        repos = preflight_config(config)
        print("Hub access checked: can write to " + ", ".join(repos.values()))
        return 0
    names = [n.strip() for n in args.experiments.split(",") if n.strip()] if args.experiments else None
    if args.experiments is not None and not names:
        raise ConfigError("--experiments: give at least one experiment name, e.g. --experiments lora-r8,lora-r16")
    context = Context(config, load_inputs(config, names))
    if args.dry_run:
        dry_run(context, args.dry_run)
        return 0
    check_scratch_space(releases(context), context, Path(tempfile.gettempdir()))  # before the token: seconds
    publisher = Publisher(context)
    try:
        publisher.publish()
    finally:  # also after a failed verification: what did move is worth knowing
        print_summary(publisher.results)
    return 0


class Publisher:
    """Runs the releases in order, each seeing the commits of those before it."""

    def __init__(self, context: Context):
        from huggingface_hub import HfApi

        token = current_token()
        kinds = ("dataset", "adapter") + (("merged", "gguf") if context.inputs.export else ())
        context.ids = preflight_config(context.config, kinds)  # the token's user, when hub.yaml names no namespace
        self.context = context
        self.revisions = Revisions(HfApi(token=token), token)
        self.results: list[Pushed] = []

    def publish(self) -> list[Pushed]:
        from tqdm.auto import tqdm

        context = self.context
        planned = releases(context)
        self.create_repos(planned)
        with tqdm(total=len(planned), desc="push", unit="release", file=sys.stderr) as bar:
            for release in planned:
                bar.set_postfix_str(release.name)
                pushed = release.publish(context, self.revisions)
                context.commits[release.name] = pushed[0].commit
                self.results += pushed
                bar.update()
        if not context.inputs.best:
            print("main not updated: runs/best.json names none of the experiments pushed", file=sys.stderr)
        return self.results

    def create_repos(self, planned: list[Release]) -> None:
        api, private = self.revisions.api, self.context.config.private
        for repo, repo_type in dict.fromkeys((self.context.repo(r), r.repo_type) for r in planned):
            with self.revisions.errors(repo, None, "cannot create"):
                api.create_repo(repo, repo_type=repo_type, private=private, exist_ok=True)


def check_scratch_space(planned: list[Release], context: Context, folder: Path) -> None:
    """Refuse before the first commit when TMPDIR cannot hold what a release needs there (the fresh
    download that verification loads), rather than fail half-way through the push."""
    needed, release = max(((r.size(context), r) for r in planned), key=lambda pair: pair[0])
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise EnvironmentProblem(f"only {free / 2**20:.1f} MiB free in {folder} (TMPDIR), where {release.name} is "
                                 f"downloaded for verification before it moves; it needs {needed / 2**20:.1f} MiB: "
                                 "free some space there or set TMPDIR to a folder with room")


# ---- the dry run ------------------------------------------------------------------------------------

def dry_run(context: Context, out: Path) -> None:
    """Write dataset/main, adapter/<branch>... to `out`: a new or empty folder, or an earlier dry run's
    (replaced as a whole, never half-written; any other folder is refused). Files from runs/ and eval/
    are hard links where the file system allows (no copy of an adapter's weights): read them, do not
    edit them in place."""
    planned = releases(context)

    def fill(tmp: Path) -> None:
        for release in planned:
            write_files(release.files(context), tmp / release.kind / release.revision)

    out = replace_dir(out.absolute(), fill)  # absolute, not resolve: a symlink is refused, never followed
    print(f"dry run: the contents of {', '.join(dict.fromkeys(context.repo(r) for r in planned))} are in {out}")


def write_files(files: Files, dest: Path) -> None:
    for name, source in files.items():
        target = dest / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, bytes):
                target.write_bytes(source)
            else:
                link_or_copy(source, target)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise
            raise EnvironmentProblem(f"{exc.strerror} writing {target}; free some space there, or choose a "
                                     "--dry-run folder with room") from None


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise
        shutil.copyfile(source, target)  # another file system, or one without hard links


def print_summary(results: list[Pushed]) -> None:
    rows = [("repo", "branch", "commit", "changed")] + [
        (r.repo, r.branch, (r.commit or "-")[:12], "yes" if r.changed else "no") for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if number == 0:
            print("  ".join("-" * width for width in widths))
