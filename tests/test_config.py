"""Configuration: every shipped file loads, and bad settings fail with one clear line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import EXIT_USAGE, ConfigError
from common.yaml_config import load_config
from training.config import DataConfig, ExperimentConfig, load_experiment

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"


def shipped(pattern: str) -> list[Path]:
    return sorted(CONFIGS.glob(pattern))


@pytest.mark.parametrize("path", shipped("**/experiments/*.yaml"), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_experiments_load(path):
    config = load_experiment(str(path))
    assert config.name == path.stem
    assert config.gradient_accumulation_steps * config.per_device_batch_size == config.effective_batch_size


@pytest.mark.parametrize("path", shipped("**/experiments/*.yaml"), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_experiments_hold_only_what_differs_from_the_defaults(path):
    """Each setting is explained once, in training/config.py; a YAML that repeats a default hides what the
    experiment changes (and goes stale when the default moves)."""
    from common.yaml_config import read_yaml
    from training.config import dump

    defaults = dump(ExperimentConfig(name=path.stem))
    resolved = dump(load_experiment(str(path)))
    for key, value in read_yaml(path).items():
        for leaf in value if isinstance(value, dict) else [None]:
            got, default = (resolved[key], defaults[key]) if leaf is None else (resolved[key][leaf], defaults[key][leaf])
            assert got != default, f"{path.name}: {key}{'.' + leaf if leaf else ''} repeats the default"
    assert "--set batch_tokens=null" in path.read_text(encoding="utf-8")  # the batching note


def test_real_experiments_follow_the_plan():
    plan = {  # learning rate, per-device batch, epochs, r, alpha
        "exp1": (2e-4, 4, 3, 16, 32),
        "exp2": (5e-5, 2, 3, 16, 32),
        "exp3": (1e-4, 4, 2, 8, 16),
    }
    for name, (lr, batch, epochs, r, alpha) in plan.items():
        c = load_experiment(name, config_dir=CONFIGS)
        assert (c.learning_rate, c.per_device_batch_size, c.epochs, c.lora.r, c.lora.alpha) == (lr, batch, epochs, r, alpha)
        assert c.effective_batch_size == 8 and c.warmup_fraction == 0.1 and c.lora.dropout == 0.05
        assert c.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def settings_model(path: Path):
    """The config class each shipped settings file is read with (by file name)."""
    from hub.config import HubConfig
    from training.config import EvalConfig
    from training.export import ExportConfig

    from training.search_config import SearchConfig

    return {"data.yaml": DataConfig, "eval.yaml": EvalConfig, "hub.yaml": HubConfig, "search.yaml": SearchConfig,
            "export.yaml": ExportConfig}[path.name]


SETTINGS_FILES = (shipped("**/data.yaml") + shipped("**/eval.yaml") + shipped("**/hub.yaml") + shipped("search.yaml")
                  + shipped("**/export.yaml"))


@pytest.mark.parametrize("path", SETTINGS_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_settings_files_load(path):
    model = settings_model(path)
    assert isinstance(load_config(model, path), model)


@pytest.mark.parametrize("path", shipped("accelerate/*.yaml"), ids=lambda p: p.name)
def test_shipped_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(path)
    assert str(config.distributed_type).endswith("MULTI_GPU")


def test_every_config_file_is_covered():
    covered = set(shipped("**/experiments/*.yaml") + SETTINGS_FILES + shipped("accelerate/*.yaml"))
    assert set(shipped("**/*.yaml")) == covered  # a new kind of config file needs a test here


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def problem(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(ExperimentConfig, path, overrides, name=path.stem)
    return str(info.value)


def test_unknown_key_names_the_closest(tmp_path):
    message = problem(write(tmp_path, "learnig_rate: 1e-4\nlora:\n  alpah: 8\n"))
    assert "unknown key 'learnig_rate' (did you mean 'learning_rate'?)" in message
    assert "unknown key 'lora.alpah' (did you mean 'lora.alpha'?)" in message  # both problems, at once
    assert str(tmp_path / "trial.yaml") in message


def test_wrong_type_and_negative_learning_rate(tmp_path):
    message = problem(write(tmp_path, "per_device_batch_size: four\nlearning_rate: -0.1\n"))
    assert "'per_device_batch_size'" in message and "'four'" in message
    assert "'learning_rate': Input should be greater than 0 (got -0.1)" in message


def test_override_is_validated_like_the_file(tmp_path):
    message = problem(write(tmp_path, "learning_rate: 1e-4\n"), "lora.r=0")
    assert "'lora.r'" in message and "--set lora.r=0" in message


def test_batch_sizes_must_divide(tmp_path):
    message = problem(write(tmp_path, "per_device_batch_size: 3\neffective_batch_size: 8\n"))
    assert "multiple of per_device_batch_size (3)" in message


@pytest.mark.parametrize("yaml_text, expected", [
    ("batch_tokens: 256\n", "less than one row of max_seq_length (512)"),
    ("batch_tokens: 4096\npadding_free: false\n", "set padding_free to auto or true"),
    ("batch_tokens: -8\n", "positive number of tokens"),
])
def test_batch_tokens_is_checked(tmp_path, yaml_text, expected):
    assert expected in problem(write(tmp_path, yaml_text))


def test_auto_batch_tokens_are_the_time_to_quality_choice_where_memory_allows():
    from training.device import Device
    from training.plan import AUTO_BATCH_TOKENS, TINYLLAMA, auto_batch_tokens

    def tokens(gpu: str, processes: int = 1, memory: int | None = None) -> int:
        device = Device.named(gpu, count=processes)
        if memory:
            device = device.share(device.memory_bytes // (memory * 2**30))
        return auto_batch_tokens(TINYLLAMA, device, "bf16", False, 512)

    assert [tokens(gpu) for gpu in ("H200", "H100", "A100-40GB", "L4")] == [AUTO_BATCH_TOKENS] * 4
    assert [tokens("H100", memory=n) for n in (16, 8, 2)] == [6144, 2048, 512]  # less memory: less, one row at least
    # Several GPUs share one step's tokens: the step, and so the adapter, stays the one-GPU step.
    assert [tokens("H200", n) for n in (1, 2, 4, 8, 16)] == [8192, 4096, 2048, 1024, 512]


def test_cli_reports_bad_config_in_one_line():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--experiment", "exp1", "--set", "learning_rate=-1"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == EXIT_USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "learning_rate" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_suggests_known_experiment():
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--experiment", "exp4"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == EXIT_USAGE
    assert "unknown experiment 'exp4'" in result.stderr and "did you mean" in result.stderr
