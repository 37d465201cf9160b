"""The Space's entry point (`app_file`): load the model named by the Space variables, serve it.

Variables: BASE_MODEL, BASE_REVISION, ADAPTER_REPO, ADAPTER_REVISION (default `main`, the
best experiment), optional COMPARE_WITH_BASE, CONCURRENCY_LIMIT, QUEUE_SIZE, FAST_DECODE. A private
adapter repo needs the HF_TOKEN secret, read by huggingface_hub and never shown. When they are
wrong (a private adapter without a usable token, an unknown revision, a missing base) the page
says so instead of the chat, and so does one `error:` line in the log.
"""
import os

# Before gradio is imported (gpu imports `spaces`, which can import it): gradio's usage analytics
# would go to api.gradio.app, or to HF_ENDPOINT on a Space; this Space sends none.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gpu  # noqa: E402,F401  next: imports `spaces` before torch, as ZeroGPU requires

import sys  # noqa: E402
import traceback  # noqa: E402

from config import SpaceConfig, SpaceConfigError  # noqa: E402
from loading import load_assistant  # noqa: E402
from ui import build_demo, build_error_page  # noqa: E402


def start():
    """(assistant, demo); a misconfigured Space still serves a page that says what to fix, and
    its log says the same in one line."""
    try:
        assistant = load_assistant(SpaceConfig.from_env())
    except SpaceConfigError as error:
        print(f"error: the Space cannot start: {error}", file=sys.stderr, flush=True)
        return None, build_error_page(str(error))
    except Exception as error:  # a bug: the traceback goes to the log, the page stays up
        traceback.print_exc()
        return None, build_error_page(f"unexpected {type(error).__name__} while loading (see the Space logs)")
    return assistant, build_demo(assistant)


# Built at import: ZeroGPU moves the model to "cuda" at import time and needs the GPU
# function (assistant.stream_generation) defined before launch().
assistant, demo = start()

if __name__ == "__main__":
    demo.launch()
