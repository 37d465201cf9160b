"""The chat contract: prompt + completion is the training text, and the contract file round-trips."""
from __future__ import annotations

import copy
import json

import pytest

from training.chat import (
    CONTRACT_FILE,
    TINYLLAMA_CHAT_TEMPLATE,
    build_messages,
    end_of_turn,
    format_example,
    read_contract,
    stop_token_ids,
    write_contract,
)
from common.errors import DataError
from training.config import DEFAULT_SYSTEM_PROMPT, GenerationConfig
from training.tokenizer import load_tokenizer

QUESTION = "What is the first-line treatment for anaphylaxis?"
ANSWER = "Intramuscular epinephrine (adrenaline), 0.5 mg for adults."


def test_build_messages_orders_system_user_assistant():
    assert build_messages("S", "Q") == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    assert build_messages("S", "Q", "A")[-1] == {"role": "assistant", "content": "A"}


def test_template_constant_is_tinyllamas(shared_data):
    config = json.loads((shared_data / "tokenizer" / "tokenizer_config.json").read_text())
    assert TINYLLAMA_CHAT_TEMPLATE == config["chat_template"]


def test_real_tokenizer_loads_with_llama_defaults(real_tokenizer):
    assert (real_tokenizer.bos_token, real_tokenizer.eos_token, real_tokenizer.pad_token) == ("<s>", "</s>", "</s>")
    assert len(real_tokenizer) == 32000
    assert real_tokenizer("hello").input_ids[0] == real_tokenizer.bos_token_id


def test_real_tokenizer_round_trip(real_tokenizer):
    row = format_example(real_tokenizer, DEFAULT_SYSTEM_PROMPT, QUESTION, ANSWER)
    assert row["prompt"] == (
        f"<|system|>\n{DEFAULT_SYSTEM_PROMPT}</s>\n<|user|>\n{QUESTION}</s>\n<|assistant|>\n"
    )
    assert row["completion"] == ANSWER + "</s>"
    text = row["prompt"] + row["completion"]
    # The full conversation rendered by the template is the training text plus the template's final newline.
    full = real_tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert full == text + "\n"

    text_ids = real_tokenizer(text).input_ids
    full_ids = real_tokenizer(full).input_ids
    prompt_ids = real_tokenizer(row["prompt"]).input_ids
    assert full_ids[: len(text_ids)] == text_ids
    # The prompt tokenizes to a prefix of the training text, so completion-only loss masks exactly the prompt.
    assert text_ids[: len(prompt_ids)] == prompt_ids
    assert text_ids[0] == real_tokenizer.bos_token_id and text_ids[-1] == real_tokenizer.eos_token_id
    assert real_tokenizer.decode(text_ids[len(prompt_ids):], skip_special_tokens=True) == ANSWER


def test_tiny_base_speaks_the_same_template(tiny_base, real_tokenizer):
    tiny = load_tokenizer(tiny_base)
    for tokenizer in (tiny, real_tokenizer):
        row = format_example(tokenizer, "S", QUESTION, ANSWER)
        assert row["prompt"] == f"<|system|>\nS</s>\n<|user|>\n{QUESTION}</s>\n<|assistant|>\n"


def test_contract_round_trip(tmp_path, real_tokenizer):
    generation = GenerationConfig(max_new_tokens=64, do_sample=True, temperature=0.5, max_input_tokens=300)
    path = write_contract(tmp_path, real_tokenizer, "Be brief.", generation)
    assert path == tmp_path / CONTRACT_FILE
    data = json.loads(path.read_text())
    assert data == {"format": 2, "system_prompt": "Be brief.", "max_input_tokens": 300}
    contract = read_contract(tmp_path)
    assert contract.system_prompt == "Be brief." and contract.max_input_tokens == 300
    decoding = contract.generation  # transformers' GenerationConfig, from generation_config.json
    assert (decoding.max_new_tokens, decoding.do_sample, decoding.temperature, decoding.top_p) == (64, True, 0.5, 0.9)
    assert decoding.eos_token_id == [real_tokenizer.eos_token_id]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "chat contract not found"),
        ("{not json", "unreadable chat contract"),
        ('{"format": 1, "system_prompt": "x"}', "unsupported chat contract format 1"),
        ('{"format": 2}', "'system_prompt' is missing"),
        ('{"format": 2, "system_prompt": "x", "max_input_tokens": -1}', "'max_input_tokens' must be a positive"),
        ('{"format": 2, "system_prompt": "x", "max_input_tokens": 10}', "generation_config.json: missing"),
    ],
)
def test_bad_contract_is_one_line_data_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / CONTRACT_FILE).write_text(content)
    with pytest.raises(DataError, match=message) as info:
        read_contract(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_tokenizer_folder_is_a_config_error(tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="not a local folder, and not found on the Hub"):
        load_tokenizer(tmp_path / "no" / "such" / "tokenizer")


# ---- both real chat templates: TinyLlama's Zephyr and SmolLM2's ChatML, from the tokenizer files alone

@pytest.fixture(scope="module", params=["tinyllama", "smollm2"])
def any_real_tokenizer(request):
    if request.param == "tinyllama":
        return request.getfixturevalue("real_tokenizer"), "</s>"
    return load_tokenizer(request.getfixturevalue("real_base")), "<|im_end|>"


def test_end_of_turn_is_read_from_the_template(any_real_tokenizer):
    tokenizer, expected = any_real_tokenizer
    assert end_of_turn(tokenizer) == expected
    assert tokenizer.convert_tokens_to_ids(expected) in stop_token_ids(tokenizer)


def test_prompt_plus_completion_is_the_templated_conversation(any_real_tokenizer):
    tokenizer, end = any_real_tokenizer
    row = format_example(tokenizer, DEFAULT_SYSTEM_PROMPT, QUESTION, ANSWER)
    assert row["completion"] == ANSWER + end
    text = row["prompt"] + row["completion"]
    full = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    # The template renders exactly the training text, then only whitespace (its newline after the turn).
    assert full.startswith(text) and not full[len(text):].strip()
    text_ids = tokenizer(text).input_ids
    prompt_ids = tokenizer(row["prompt"]).input_ids
    assert text_ids[: len(prompt_ids)] == prompt_ids  # completion-only loss masks exactly the prompt
    # The last label is the end-of-turn token: the model learns to close its turn, and generation stops there.
    assert text_ids[-1] == tokenizer.convert_tokens_to_ids(end)
    assert tokenizer.decode(text_ids[len(prompt_ids):], skip_special_tokens=True) == ANSWER


def test_template_without_a_special_end_of_turn_is_refused(real_tokenizer):
    from common.errors import ConfigError

    tokenizer = copy.deepcopy(real_tokenizer)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ConfigError, match="not a special token"):
        end_of_turn(tokenizer)
