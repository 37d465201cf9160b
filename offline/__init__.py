"""The offline world the project runs in: a local stand-in for the Hugging Face Hub and the demo.

`offline.server` speaks the Hub's HTTP API so that the real huggingface_hub, datasets, transformers
and peft clients work against it through HF_ENDPOINT (the tests and `make demo` use it; nothing
talks to huggingface.co). `offline.demo` runs the whole product against it on a CPU.

    python -m offline serve --dir hub-data --port 8089     # make serve
    python -m offline demo                                 # make demo
"""
