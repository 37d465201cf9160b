"""The Space's entry point (`app_file`): load the model named by the Space variables, serve it.

Variables: BASE_MODEL, BASE_REVISION, ADAPTER_REPO, ADAPTER_REVISION (default `main`, the
best experiment), optional COMPARE_WITH_BASE, CONCURRENCY_LIMIT, QUEUE_SIZE. A private
adapter repo needs the HF_TOKEN secret, read by huggingface_hub and never shown.
"""
import gpu  # noqa: F401  first: imports `spaces` before torch, as ZeroGPU requires

from assistant import SpaceConfig, load_assistant
from ui import build_demo

# Built at import: ZeroGPU moves the model to "cuda" at import time and needs the GPU
# function defined before launch().
assistant = load_assistant(SpaceConfig.from_env())
demo = build_demo(assistant)

if __name__ == "__main__":
    demo.launch()
