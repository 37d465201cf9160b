"""A QLoRA adapter is merged into the NF4 weights it was trained on (dequantized), not into the original
float weights. Needs a CUDA GPU and bitsandbytes (skipped, with the reason, without them):

    python -m pytest tests/test_export_qlora.py -m gpu -q
"""
from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("bitsandbytes") is None,
                       reason="needs torch and bitsandbytes"),
]


@pytest.fixture
def qlora_run(tiny_base, tmp_path):
    """runs/q/ as `train` leaves a QLoRA run: a LoRA (random, non-zero B) on the NF4 base, saved with its files."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.chat import write_contract
    from training.tokenizer import load_tokenizer
    from common.yaml_config import validate
    from training.config import DEFAULT_SYSTEM_PROMPT, ExperimentConfig, GenerationConfig, dump
    from training.provenance import base_model_record
    from training.trainer import nf4_quantization

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (bitsandbytes loads NF4 weights there)")
    run = tmp_path / "runs" / "q"
    config = validate(ExperimentConfig, dict(name="q", base_model=str(tiny_base), base_revision=None,
                                             runs_dir=str(tmp_path / "runs"), quantization="nf4"), "test")
    base = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.bfloat16, device_map={"": 0},
                                                quantization_config=nf4_quantization(torch.bfloat16))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    model.save_pretrained(run / "adapter")
    tokenizer = load_tokenizer(tiny_base)
    tokenizer.save_pretrained(run / "adapter")
    write_contract(run / "adapter", tokenizer, DEFAULT_SYSTEM_PROMPT, GenerationConfig())
    (run / "config.yaml").write_text(yaml.safe_dump(dump(config)))
    (run / "metrics.json").write_text(json.dumps({"hardware": {"quantization": "nf4", "precision": "bf16"}}))
    (run / "provenance.json").write_text(json.dumps({"base_model": base_model_record(str(tiny_base), None)}))
    return tmp_path / "runs"


def test_qlora_merge_reproduces_the_adapter_on_its_nf4_base(qlora_run, tiny_base):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from training.export_merge import merged_model, read_run
    from training.trainer import nf4_quantization

    run = read_run(qlora_run, "q")
    ids = torch.randint(3, 1000, (1, 48), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.inference_mode():
        # the adapter as trained: NF4 base weights, computed in float32 here so only the merge differs
        nf4 = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, device_map={"": 0},
                                                   quantization_config=nf4_quantization(torch.float32))
        reference = PeftModel.from_pretrained(nf4, str(run.adapter_dir))(input_ids=ids).logits.float()
        merged = merged_model(run).cuda()(input_ids=ids).logits.float()
        naive = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32),
                                          str(run.adapter_dir)).merge_and_unload().cuda()(input_ids=ids).logits.float()
    proper = (merged - reference).abs().max().item()
    wrong = (naive - reference).abs().max().item()
    assert proper <= 1e-3, proper
    assert wrong > 20 * proper, (wrong, proper)  # merging into the original float weights is another model
