"""space/decoding.py, the Space's fast decode loop, on CPU (the same steps run eagerly; only the
CUDA graph capture is left to the GPU benchmark): its tokens against `model.generate`'s with the
same GenerationConfig, on the tiny random model and on the real SmolLM2-135M-Instruct base."""
from __future__ import annotations

import importlib
import threading

import pytest

from space_support import space_importable

QUESTIONS = ["What are the symptoms of iron deficiency anaemia?", "Say hi.",
             "Which drug is first-line for anaphylaxis, and at what dose?"]
CAPACITY = 256  # prompt + answer tokens a test decoder holds


class Loaded:
    """A model with its tokenizer and the Space's decoding module."""

    def __init__(self, decoding, model, tokenizer):
        self.decoding, self.model, self.tokenizer = decoding, model, tokenizer

    def prompt(self, question: str):
        from training.chat import format_prompt
        from training.config import DEFAULT_SYSTEM_PROMPT

        return self.tokenizer(format_prompt(self.tokenizer, DEFAULT_SYSTEM_PROMPT, question),
                              return_tensors="pt").input_ids

    def contract_generation(self, **settings):
        """The decoding settings as training writes them into an adapter (stop at end of turn)."""
        from training.chat import generation_config
        from training.config import GenerationConfig

        return generation_config(self.tokenizer, GenerationConfig(**settings))

    def reference(self, ids, generation) -> tuple[list[int], str]:
        """`model.generate`'s new tokens and streamed text, as the Space called it before."""
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        with torch.inference_mode():
            output = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                         generation_config=generation)
        return output[0, ids.shape[-1]:].tolist(), "".join(streamer)

    def fast(self, ids, generation, stop=None, limit=2, streamer=None):
        """(answer, streamed text) from the fast loop; answer None when it declined the request."""
        from transformers import TextIteratorStreamer

        streamer = streamer or TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        answer = self.decoding.generate_fast(self.model, ids, generation, streamer, stop or threading.Event(),
                                             capacity=CAPACITY, decoders_per_model=limit)
        return answer, ("".join(streamer) if answer is not None and hasattr(streamer, "text_queue") else None)


def load(model_dir):
    from transformers import AutoModelForCausalLM

    from training.tokenizer import load_tokenizer

    with space_importable():
        decoding = importlib.import_module("decoding")
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        model.generation_config.max_length = None  # as the Space loads it: max_new_tokens governs
        loaded = Loaded(decoding, model, load_tokenizer(model_dir))
        yield loaded
        decoding.forget(model)


@pytest.fixture(scope="module")
def tiny(tiny_base):
    yield from load(tiny_base)


@pytest.fixture(scope="module")
def real(real_base):
    yield from load(real_base)


@pytest.fixture(params=["tiny", pytest.param("real", marks=pytest.mark.slow)])
def loaded(request):
    return request.getfixturevalue(request.param)


# ---- same tokens as generate ---------------------------------------------------------------


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_tokens_and_stream_equal_generate(loaded, penalty):
    generation = loaded.contract_generation(max_new_tokens=24, repetition_penalty=penalty)
    for question in QUESTIONS:
        ids = loaded.prompt(question)
        expected, expected_text = loaded.reference(ids, generation)
        answer, text = loaded.fast(ids, generation)
        assert answer.new_ids == expected, question
        assert text == expected_text and not answer.stopped


def test_stops_at_any_stop_token_before_max_new_tokens(tiny):
    """A random model never says end of turn: two of the tokens generate emits are made stop
    tokens, and both loops must stop at the first of them."""
    ids = tiny.prompt(QUESTIONS[0])
    generation = tiny.contract_generation(max_new_tokens=24)
    free_run, _ = tiny.reference(ids, generation)
    generation.eos_token_id = [free_run[9], free_run[5]]
    expected, _ = tiny.reference(ids, generation)
    answer, _ = tiny.fast(ids, generation)
    assert answer.new_ids == expected and len(expected) <= 6 and expected[-1] in generation.eos_token_id


@pytest.mark.slow
def test_the_real_model_ends_its_turn_as_generate_does(real):
    generation = real.contract_generation(max_new_tokens=96)
    ids = real.prompt("Say hi.")
    expected, _ = real.reference(ids, generation)
    answer, _ = real.fast(ids, generation)
    end_of_turn = real.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert answer.new_ids == expected and len(expected) < 96 and expected[-1] == end_of_turn


def test_sampling_gives_valid_tokens_within_max_new_tokens(loaded):
    import torch

    generation = loaded.contract_generation(max_new_tokens=16, do_sample=True, temperature=0.7, top_p=0.9)
    generation.top_k = 20
    ids = loaded.prompt(QUESTIONS[0])
    answers = []
    for _ in range(2):
        torch.manual_seed(1234)
        answer, text = loaded.fast(ids, generation)
        answers.append(answer.new_ids)
    vocab = loaded.model.config.vocab_size
    assert 1 <= len(answers[0]) <= 16 and all(0 <= token < vocab for token in answers[0])
    if not set(answers[0]) & set(generation.eos_token_id):
        assert len(answers[0]) == 16
    assert answers[0] == answers[1], "a fixed seed must give the same answer"


# ---- stopping, pooling, reuse --------------------------------------------------------------


class StopAfter:
    """A streamer (transformers' BaseStreamer interface) that sets the request's stop event once
    `tokens` answer tokens arrived, as a closed connection does mid-answer."""

    def __init__(self, event: threading.Event, tokens: int):
        self.event, self.tokens, self.puts, self.ended = event, tokens, 0, False

    def put(self, value) -> None:
        self.puts += 1
        if self.puts > self.tokens:  # the first put is the prompt
            self.event.set()

    def end(self) -> None:
        self.ended = True


def test_the_stop_event_ends_the_answer_at_the_next_token(tiny):
    generation = tiny.contract_generation(max_new_tokens=24)
    stop = threading.Event()
    streamer = StopAfter(stop, tokens=3)
    answer, _ = tiny.fast(tiny.prompt(QUESTIONS[0]), generation, stop=stop, streamer=streamer)
    assert len(answer.new_ids) == 3 and answer.stopped and streamer.ended


def test_busy_decoders_send_the_request_to_generate(tiny):
    generation = tiny.contract_generation(max_new_tokens=8)
    ids = tiny.prompt(QUESTIONS[0])
    tiny.decoding.forget(tiny.model)
    with tiny.decoding.borrowed_decoder(tiny.model, CAPACITY, limit=1) as held:
        assert held is not None
        streamer = StopAfter(threading.Event(), tokens=100)
        answer, _ = tiny.fast(ids, generation, limit=1, streamer=streamer)
        assert answer is None and streamer.puts == 0, "a declined request must stream nothing"
    answer, _ = tiny.fast(ids, generation, limit=1)  # released: served again
    assert answer is not None


def test_supports_refuses_what_it_does_not_implement(tiny):
    supports = tiny.decoding.supports
    generation = tiny.contract_generation(max_new_tokens=8, do_sample=True)
    assert supports(generation, tiny.model)
    for name, value in {"num_beams": 2, "no_repeat_ngram_size": 3, "min_new_tokens": 2, "min_p": 0.1,
                        "suppress_tokens": [5], "max_new_tokens": None}.items():
        changed = tiny.contract_generation(max_new_tokens=8, do_sample=True)
        setattr(changed, name, value)
        assert not supports(changed, tiny.model), name
        assert tiny.fast(tiny.prompt(QUESTIONS[1]), changed)[0] is None, name


def test_a_reused_cache_answers_as_a_fresh_one(tiny):
    """The long prompt's keys and values stay in the cache's slots past the short one's: the
    second answer must still be a fresh decoder's."""
    generation = tiny.contract_generation(max_new_tokens=24, repetition_penalty=1.3)
    settings = tiny.decoding.decode_settings(generation, tiny.model)
    long_ids, short_ids = tiny.prompt(QUESTIONS[2] * 3), tiny.prompt(QUESTIONS[1])

    def answer(decoder, ids):
        return decoder.generate(ids, settings, StopAfter(threading.Event(), 10**6), threading.Event()).new_ids

    reused = tiny.decoding.Decoder(tiny.model, CAPACITY)
    answer(reused, long_ids)
    assert answer(reused, short_ids) == answer(tiny.decoding.Decoder(tiny.model, CAPACITY), short_ids)


def test_a_request_beyond_the_cache_goes_to_generate_and_a_direct_one_ends_the_stream(tiny):
    generation = tiny.contract_generation(max_new_tokens=8)
    too_long = tiny.prompt(QUESTIONS[0] * 40)
    assert too_long.shape[-1] + 8 > CAPACITY
    assert tiny.fast(too_long, generation)[0] is None
    streamer = StopAfter(threading.Event(), 10)
    with pytest.raises(ValueError, match="exceed the cache"):
        tiny.decoding.Decoder(tiny.model, CAPACITY).generate(
            too_long, tiny.decoding.decode_settings(generation, tiny.model), streamer, threading.Event())
    assert streamer.ended, "the consumer of the stream must not wait forever"


# ---- through the Space's stream_generation -------------------------------------------------


@pytest.mark.parametrize("fast_decode", [True, False])
def test_stream_generation_answers_the_same_with_fast_decode_on_and_off(tiny_base, fast_decode):
    from transformers import AutoModelForCausalLM

    from training.chat import format_prompt
    from training.config import DEFAULT_SYSTEM_PROMPT
    from training.tokenizer import load_tokenizer

    with space_importable():
        space = importlib.import_module("assistant")
        config = importlib.import_module("config")
        tokenizer = load_tokenizer(tiny_base)
        model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
        model.generation_config.max_length = None
        helper = Loaded(space.decoding, model, tokenizer)
        generation = helper.contract_generation(max_new_tokens=12, repetition_penalty=1.3)
        settings = config.SpaceConfig(base_model="tiny", adapter_repo="local/adapter", fast_decode=fast_decode,
                                      concurrency_limit=1)
        contract = config.ChatContract(system_prompt=DEFAULT_SYSTEM_PROMPT, max_input_tokens=128, generation=generation)
        assistant = space.Assistant(config=settings, adapter_sha="local", contract=contract, tokenizer=tokenizer,
                                    models={"tuned": model})
        space._LOADED[assistant.key] = assistant
        try:
            ids = tokenizer(format_prompt(tokenizer, DEFAULT_SYSTEM_PROMPT, QUESTIONS[0])).input_ids
            text = "".join(space.stream_generation(assistant.key, "tuned", ids))
            decoders = space.decoding.pool_state(model)["decoders"]
        finally:
            del space._LOADED[assistant.key]
            space.decoding.forget(model)
    expected_ids, expected_text = helper.reference(helper.prompt(QUESTIONS[0]), generation)
    assert text == expected_text
    assert (assistant.stats.started, assistant.stats.completed, assistant.stats.stopped_early) == (1, 1, 0)
    assert assistant.stats.last_new_tokens == len(expected_ids) == 12
    assert decoders == (1 if fast_decode else 0), "the fast loop serves it only when on"


def test_fast_decode_is_a_space_variable(tiny_base):
    with space_importable():
        space = importlib.import_module("config")
        required = {"BASE_MODEL": "b", "ADAPTER_REPO": "a"}
        assert space.SpaceConfig.from_env(required).fast_decode
        for off in ("0", "false", "False"):
            assert not space.SpaceConfig.from_env(required | {"FAST_DECODE": off}).fast_decode
        assert space.SpaceConfig.from_env(required | {"FAST_DECODE": "1"}).fast_decode
