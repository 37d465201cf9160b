"""The Gradio interface: a streaming chat, a base-vs-fine-tuned comparison, the disclaimer
and a footer naming the served adapter and base commits.

Each request is checked once, by request.check_input, before anything reaches the GPU function,
and triaged once, on the cleaned question; emergency guidance then comes before every answer.
"""
from __future__ import annotations

from collections.abc import Iterator

import gradio as gr
from huggingface_hub import constants

from assistant import Assistant
from request import MAX_INPUT_CHARS, check_input
from safety import DISCLAIMER, emergency_guidance

TITLE = "Medical flashcards assistant"
EXAMPLES = [
    "What are the common symptoms of iron deficiency anaemia?",
    "How does metformin lower blood glucose?",
    "What is the first-line treatment for uncomplicated hypertension?",
]


def with_guidance(guidance: str, answers: Iterator[str]) -> Iterator[str]:
    """The answer stream, with the emergency guidance (if any) first."""
    prefix = f"{guidance}\n\n---\n\n" if guidance else ""
    if prefix:
        yield prefix  # before the model starts: the guidance must not wait for the GPU
    for answer in answers:
        yield prefix + answer


def footer(assistant: Assistant) -> str:
    """The adapter and the base at the commits served, each linked, and the revisions they were asked for."""
    config, sha, base_sha = assistant.config, assistant.adapter_sha, assistant.base_sha
    repo_url, base_url = (f"{constants.ENDPOINT}/{repo}" for repo in (config.adapter_repo, config.base_model))
    base = (f"[{config.base_model} @ {base_sha[:12]}]({base_url}/tree/{base_sha}), requested as "
            f"`{config.base_revision or 'main'}`" if base_sha else f"`{config.base_model}` (a local folder)")
    return (
        f"Serving adapter [{config.adapter_repo} @ {sha[:12]}]({repo_url}/tree/{sha}) "
        f"([model card]({repo_url}/blob/{sha}/README.md)), requested as `{config.adapter_revision}`, "
        f"on base model {base}."
    )


def startup_error(problem: str) -> str:
    return (
        "## This Space could not start\n\n"
        f"```text\n{problem}\n```\n\n"
        "If you own this Space, fix the variable or secret named above under *Settings → Variables "
        "and secrets* and restart it. A private adapter repo needs a read token as the secret `HF_TOKEN`."
    )


def build_error_page(problem: str) -> gr.Blocks:
    """Served instead of the chat when the Space is misconfigured: the page, and API callers of
    `/chat`, are told what is wrong; nothing is loaded or generated."""

    def chat(message: str) -> str:
        return f"This Space could not start: {problem}"

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(startup_error(problem), elem_id="startup-error")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        gr.api(chat, api_name="chat")
    return demo.queue()


def build_demo(assistant: Assistant) -> gr.Blocks:
    def chat(message: str, history: list) -> Iterator[str]:
        question, prompt = check_input(assistant, message, history)
        if prompt is None:
            yield question
            return
        yield from with_guidance(emergency_guidance(question), assistant.stream("tuned", prompt))

    def compare(message: str) -> Iterator[tuple[str, str]]:
        question, prompt = check_input(assistant, message, [])
        if prompt is None:
            yield question, question
            return
        guidance = emergency_guidance(question)
        tuned = ""
        for tuned in with_guidance(guidance, assistant.stream("tuned", prompt)):
            yield tuned, ""
        for base in with_guidance(guidance, assistant.stream("base", prompt)):
            yield tuned, base

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}")
        gr.Markdown(DISCLAIMER, elem_id="disclaimer")
        with gr.Tab("Chat"):
            gr.ChatInterface(
                chat,
                api_name="chat",
                examples=EXAMPLES,
                cache_examples=False,  # Spaces default True would generate at startup
                concurrency_limit=assistant.config.concurrency_limit,
            )
        if "base" in assistant.models:
            with gr.Tab("Compare with base"):
                question = gr.Textbox(label="Question", lines=2, max_length=MAX_INPUT_CHARS)
                ask = gr.Button("Compare", variant="primary")
                with gr.Row():
                    # Plain text boxes: model output is shown as text, never rendered as HTML.
                    tuned_box = gr.Textbox(label="Fine-tuned", lines=10, interactive=False, elem_id="tuned-answer")
                    base_box = gr.Textbox(label="Base model", lines=10, interactive=False, elem_id="base-answer")
                gr.on(
                    [ask.click, question.submit],
                    compare,
                    inputs=question,
                    outputs=[tuned_box, base_box],
                    api_name="compare",
                    concurrency_limit=assistant.config.concurrency_limit,
                )
        gr.Markdown(footer(assistant), elem_id="served-revision")
    # An explicit max_size: on ZeroGPU gradio would otherwise shrink the queue to 1.
    return demo.queue(max_size=assistant.config.queue_size)
