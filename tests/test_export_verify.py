"""The merged model's greedy answers against the adapter's: a divergence passes only where the merged model's two
candidate tokens are within the rounding's reach of each other (a near-tie), measured on a real forward pass."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs torch")

from training.export_verify import Answer, Decoding, near_ties  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tiny_base):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()


def greedy_and_runner_up(model, prompt: list[int], steps: int) -> tuple[list[int], list[int], float]:
    """The model's greedy tokens, and the same answer with its last token swapped for the runner-up (and the gap)."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        top = model(input_ids=torch.tensor([ids[:-1]])).logits[0, -1].topk(2)
    greedy = ids[len(prompt):]
    return greedy, greedy[:-1] + [int(top.indices[1])], float(top.values[0] - top.values[1])


def test_a_divergence_is_a_near_tie_only_within_the_tolerance(tiny_model):
    prompt = [1, 23, 66, 38, 66, 67]
    greedy, swapped, gap = greedy_and_runner_up(tiny_model, prompt, steps=4)
    decoding = Decoding(max_new_tokens=4, repetition_penalty=1.0, stop_ids=(2,), end_of_turn=2)
    reference, test = [Answer(swapped, False)], [Answer(greedy, False)]

    [within] = near_ties(tiny_model, [prompt], reference, test, decoding, tolerance=gap * 1.01)
    assert within["position"] == 3 and within["margin"] == pytest.approx(gap, rel=1e-4) and within["tie"] is True
    [beyond] = near_ties(tiny_model, [prompt], reference, test, decoding, tolerance=gap / 2)
    assert beyond["tie"] is False
    assert near_ties(tiny_model, [prompt], test, test, decoding, tolerance=gap) == []  # equal answers: nothing to weigh


def test_an_answer_that_is_a_prefix_of_the_other_is_never_a_tie(tiny_model):
    decoding = Decoding(max_new_tokens=4, repetition_penalty=1.0, stop_ids=(2,), end_of_turn=2)
    [found] = near_ties(tiny_model, [[1, 23]], [Answer([5, 6], True)], [Answer([5, 6, 7], False)], decoding, 1e9)
    assert found == {"question": 0, "position": 2, "margin": None, "tie": False}
