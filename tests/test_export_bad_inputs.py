"""`python -m training export` on bad input: one line, the documented exit code, every file that was
there byte-identical and nothing written. One tiny TinyLlama-shaped run (two steps) serves every case;
a case that changes it works on a copy."""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
from pathlib import Path

import pytest

from reliability_support import check_one_line_error, digests, run_in_process
from test_faults import tmpfs
from test_train import prepare_data, short_experiment

pytestmark = [
    pytest.mark.slow,  # trains the tiny model once (seconds)
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama-cpp-python is not installed: `make setup` builds it (requirements-llama-cpp.txt)"),
]

# case -> (exit code, fragment of the one error line)
EXPORT_CASES = {
    "no-trained-run": (2, "no trained run to export"),
    "unknown-experiment": (2, "no trained run 'shrot'"),
    "type-needing-an-importance-matrix": (2, "only with an importance matrix"),
    "unknown-type": (2, "did you mean Q4_K_M?"),
    "base-missing": (2, "is missing"),
    "base-weights-changed": (3, "is not the one short was trained on"),
    "not-enough-disk": (5, "not enough disk"),
    "output-folder-not-ours": (2, "refusing to replace"),
    "llama-cpp-converter-missing": (5, "make setup"),
}


@pytest.fixture(scope="module")
def trained(tiny_base, sample_flashcards, tmp_path_factory) -> Path:
    """work/: base/ (a copy of the tiny base), data/, runs/short (two steps), runs/best.json."""
    from training.run_outputs import update_best
    from training.train import train_experiment

    work = tmp_path_factory.mktemp("export-bad-inputs")
    base = shutil.copytree(tiny_base, work / "base")
    config = short_experiment(base, prepare_data(work / "data", sample_flashcards, base, 32), work / "runs",
                              max_steps=2, eval_steps=2, save_steps=2)
    train_experiment(config)
    update_best(config.runs_dir)
    return work


@pytest.mark.parametrize("case", EXPORT_CASES)
def test_bad_export_input_is_one_line_and_changes_nothing(case, trained, tmp_path, monkeypatch):
    work = trained
    runs, out = work / "runs", tmp_path / "exports"
    settings = []
    restore = None
    if case == "no-trained-run":
        runs = tmp_path / "empty-runs"
        runs.mkdir()
    elif case == "unknown-experiment":
        settings.append("experiments=shrot")
    elif case == "type-needing-an-importance-matrix":
        settings.append("formats=F16,IQ2_XS")
    elif case == "unknown-type":
        settings.append("formats=q4_km")
    elif case == "base-missing":
        restore = (work / "base").rename(tmp_path / "moved-base"), work / "base"
    elif case == "base-weights-changed":
        weights = work / "base" / "model.safetensors"
        restore = shutil.copy(weights, tmp_path / "model.safetensors"), weights
        change_one_weight(weights)
    elif case == "not-enough-disk":
        out = tmp_path / "disk" / "exports"
    elif case == "output-folder-not-ours":
        (out / "short").mkdir(parents=True)
        (out / "short" / "notes.txt").write_text("the user's own notes")
    elif case == "llama-cpp-converter-missing":
        monkeypatch.setattr("training.export_runtime.CONVERTER_DIR", tmp_path / "no-converter")
    try:
        with tmpfs(tmp_path / "disk", "size=1m") if case == "not-enough-disk" else contextlib.nullcontext():
            before = digests(work, tmp_path)
            code, _, stderr = run_in_process("training", "export", "--set", f"runs_dir={runs}",
                                             "--set", f"output_dir={out}", *[a for s in settings for a in ("--set", s)])
            after = digests(work, tmp_path)
    finally:
        if restore:
            shutil.move(*restore)
    expected_code, fragment = EXPORT_CASES[case]
    check_one_line_error(code, stderr, expected_code, fragment)
    assert after == before  # every file as it was, and none added (no staging folder left behind)


def change_one_weight(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, path, metadata={"format": "pt"})
