"""What bench/gpu_shared_session.sh carries to the GPU machine, built here: one folder per device call under
.gpu-carry/session/, each small enough to travel with the working tree (64 MiB a call in all).

    python bench/gpu_carry.py --wheels ../main/.whl --bnb ../main/.gpu-carry/bnb --tokenizer ../shared/data/tokenizer

call1/: the wheels the GPU image lacks (the project's pins), bitsandbytes unpacked with only its CUDA 13.0
library, TinyLlama's tokenizer and config, the flashcards and MedQA, the commit the tree is sent from
(code.json: build the carry from the checkout you send), and the first piece of the real base's GGUF
(gzip-compressed: 98.4 MB become 92.7); call2/, call3/...: the GGUF's other pieces, as many calls as it takes.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from training.provenance import code_commit  # noqa: E402
from training.real_base import GGUF_NAME, check_gguf, packaged_gguf  # noqa: E402

CALL_LIMIT = 64 * 2**20  # what one device call carries, working tree included
MARGIN = 2 * 2**20  # room for files the working tree gains before the session
# The packages the session needs that the GPU image lacks or has at another version (the project's pins).
WHEELS = ("transformers", "trl", "datasets", "dill", "multiprocess", "fsspec", "peft", "pydantic", "pydantic_core",
          "annotated_types", "typing_inspection", "gguf", "liger_kernel", "nltk", "rouge_score", "sacrebleu",
          "portalocker", "tabulate", "colorama",
          "optuna", "colorlog",  # the search's: its journal storage needs neither sqlalchemy nor alembic
          "huggingface_hub", "httpx2", "httpcore2", "truststore", "click",  # transformers 5.25 needs hub >= 2.4
          "kernels")  # and refuses the image's kernels version (used with USE_HUB_KERNELS=NO: nothing is fetched)
DATA = REPO_ROOT.parent / "shared" / "data"
FLASHCARDS = DATA / "flashcards" / "medical_flashcards_test_3396.json"
MEDQA = DATA / "eval" / "medqa_usmle_4options_test.jsonl"


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def tree_size() -> int:
    """What the working tree sends with every call: tracked and untracked files that git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.split(b"\0")
    return sum((REPO_ROOT / name.decode()).stat().st_size for name in listed if name and
               (REPO_ROOT / name.decode()).is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder of the project's pinned wheels")
    parser.add_argument("--bnb", type=Path, required=True, help="bitsandbytes unpacked (its CUDA 13.0 library only)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="TinyLlama's tokenizer and config.json")
    parser.add_argument("--flashcards", type=Path, default=FLASHCARDS)
    parser.add_argument("--medqa", type=Path, default=MEDQA)
    parser.add_argument("--gguf", type=Path, default=None, help=f"{GGUF_NAME} (default: the installed package's)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".gpu-carry" / "session")
    args = parser.parse_args(argv)

    gguf = args.gguf or packaged_gguf()
    check_gguf(gguf)  # the sha256 the real base is built from
    shutil.rmtree(args.out, ignore_errors=True)
    first = args.out / "call1"
    (first / "whl").mkdir(parents=True)
    for wheel in sorted(args.wheels.glob("*.whl")):
        if wheel.name.split("-")[0].lower() in WHEELS:
            shutil.copy2(wheel, first / "whl")
    missing = set(WHEELS) - {w.name.split("-")[0].lower() for w in (first / "whl").iterdir()}
    if missing:
        raise SystemExit(f"{args.wheels}: no wheel for {', '.join(sorted(missing))}")
    shutil.copytree(args.bnb, first / "bnb")
    shutil.copytree(args.tokenizer, first / "tok")
    # The GPU machine's copy of the tree has no .git: the commit it is sent from (training.provenance reads it)
    (first / "code.json").write_text(json.dumps(code_commit()))
    (first / "data").mkdir()
    for source in (args.flashcards, args.medqa):
        shutil.copy2(source, first / "data" / source.name)

    packed, tree, call = gzip.compress(gguf.read_bytes(), compresslevel=9), tree_size(), 1
    room = CALL_LIMIT - MARGIN - tree
    while packed:
        folder = args.out / f"call{call}"
        folder.mkdir(exist_ok=True)
        piece = room - size(folder)
        if piece <= 0:
            raise SystemExit(f"{folder} leaves no room for the GGUF: carry less")
        (folder / f"gguf.gz.part-{call}").write_bytes(packed[:piece])
        packed, call = packed[piece:], call + 1
        print(f"{folder}: {size(folder) / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
              f"{(tree + size(folder)) / 2**20:.1f} MiB of {CALL_LIMIT / 2**20:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
