"""The Space in a real browser: headless Chromium (Debian's package) driven by Playwright."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from space_support import LONG_ANSWER_TOKENS, chromium_page, needs_chromium, serve_space

SCREENSHOT = Path(__file__).resolve().parent.parent / "test-artifacts" / "space.png"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    needs_chromium,
]


@pytest.fixture(scope="module")
def served(tiny_base, hub_server, tmp_path_factory):
    # Long answers, so that there is time to press Stop while one streams.
    with serve_space(tiny_base, hub_server, tmp_path_factory.mktemp("space-ui"), "exp/long", LONG_ANSWER_TOKENS) as space:
        yield space


@pytest.fixture(scope="module")
def page(served):
    with chromium_page(served.url, viewport={"width": 1280, "height": 1000}) as page:
        yield page


def ask(page, question: str) -> None:
    box = page.get_by_test_id("textbox").first
    box.fill(question)
    box.press("Enter")


def wait_until_idle(page) -> None:
    """The answer has finished streaming: the submit button is back."""
    page.locator(".submit-button").first.wait_for(state="visible", timeout=60_000)


def test_question_gets_a_streamed_answer_under_the_disclaimer_and_revision(served, page):
    from playwright.sync_api import expect

    expect(page.locator("#disclaimer")).to_contain_text("Not medical advice")
    revision = page.locator("#served-revision")
    expect(revision).to_contain_text(f"{served.repo} @ {served.sha[:12]}")
    assert served.sha in revision.locator("a").first.get_attribute("href")

    ask(page, "What are the symptoms of iron deficiency anaemia?")
    expect(page.locator(".user").last).to_contain_text("iron deficiency anaemia")
    answer = page.locator(".bot.message").last
    expect(answer).not_to_be_empty(timeout=60_000)
    first_seen = answer.inner_text()
    wait_until_idle(page)
    assert len(answer.inner_text()) > len(first_seen), "the answer did not grow while streaming"
    expect(page.locator("#disclaimer")).to_be_visible()
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_html_in_a_message_stays_inert(page):
    from playwright.sync_api import expect

    ask(page, 'Is <img src=x onerror="window.pwned=1"> <script>window.pwned=1</script> <b>anaemia</b> serious?')
    expect(page.locator(".user").last).to_contain_text("serious?")
    wait_until_idle(page)
    assert page.evaluate("window.pwned") is None
    assert page.locator(".user img[onerror]").count() == 0


def test_stop_button_ends_generation(served, page):
    stats = served.assistant.stats
    stopped_before = stats.stopped_early
    # The tiny model can finish its 512 tokens before a click lands on a busy machine: then ask again.
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for question in ("How is type 2 diabetes diagnosed?", "What causes scurvy?", "How is anaemia treated?"):
        wait_until_idle(page)
        finished_before = stats.completed
        ask(page, question)
        try:
            page.locator(".stop-button").first.click(timeout=30_000)
        except PlaywrightTimeout:  # the answer was done before the button could be clicked
            continue
        deadline = time.monotonic() + 30
        while stats.stopped_early == stopped_before and stats.completed == finished_before \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        if stats.stopped_early > stopped_before:
            break
    assert stats.stopped_early == stopped_before + 1
    assert stats.last_new_tokens < LONG_ANSWER_TOKENS
