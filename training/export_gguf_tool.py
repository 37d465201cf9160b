"""llama.cpp's converter and quantizer, each run in a process of its own by training/export_gguf.py.

A process of its own because the converter must import the `gguf` package it was released with
(vendored beside it, as its own script does), not the one installed for transformers, and because
llama.cpp aborts the whole process on some errors: here that is a failed step with its log, not a
crashed `export`. This file imports nothing of the project.

    python export_gguf_tool.py convert CONVERTER_DIR MODEL_DIR OUT.gguf --end-of-turn ID --name NAME [--space-at-start-only]
    python export_gguf_tool.py quantize IN.gguf OUT.gguf --type Q4_K_M --threads 2 [--embedding-type F16]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


# Rendered before the chat template in a GGUF whose SentencePiece tokenizer adds no space of its own:
# the one '▁' that transformers' tokenizer puts at the start of the text (a Jinja expression, not a bare
# space, which the template's lstrip_blocks would strip).
LEADING_SPACE = "{{ ' ' }}"


def convert(converter_dir: Path, model_dir: Path, out: Path, end_of_turn: int, name: str,
            space_at_start_only: bool = False) -> None:
    """F16 GGUF of a transformers model folder through llama.cpp's converter classes, as its
    convert_hf_to_gguf.py script runs them, plus the chat template's end-of-turn token as EOT.

    `space_at_start_only`: the tokenizer (SentencePiece, `legacy: false`) puts '▁' before the start of the
    text only, where llama.cpp's puts it before every piece of text that follows a special token
    (llama-vocab.cpp, LLAMA_VOCAB_TYPE_SPM: `tokenizer_add_space_prefix && is_prev_special`). The GGUF then
    says `add_space_prefix = false` and its chat template renders that one leading space itself, so llama.cpp
    tokenizes the rendered prompt as transformers does (checked by training/export_verify.py)."""
    sys.path[1:1] = [str(converter_dir / "gguf-py"), str(converter_dir)]
    import gguf
    import torch
    from conversion import ModelBase, ModelType, get_model_architecture, get_model_class

    hparams = ModelBase.load_hparams(model_dir, False)
    converter = get_model_class(get_model_architecture(hparams, ModelType.TEXT), mmproj=False)

    class WithEndOfTurn(converter):
        # The converter stores eos (and the template); llama.cpp stops at EOT too, and guesses it from
        # token texts when it is absent: the chat contract's end of turn is written rather than guessed.
        model_arch = converter.model_arch

        def set_vocab(self):
            super().set_vocab()
            self.gguf_writer.add_eot_token_id(end_of_turn)
            if space_at_start_only:
                template = self.gguf_writer.kv_data[0][gguf.Keys.Tokenizer.CHAT_TEMPLATE].value
                self.gguf_writer.add_add_space_prefix(False)  # both replace what the converter wrote
                self.gguf_writer.add_chat_template(LEADING_SPACE + template)

    with torch.inference_mode():
        WithEndOfTurn(model_dir, gguf.LlamaFileType.MOSTLY_F16, out, model_name=name).write()


def quantize(source: Path, out: Path, quant_type: str, threads: int, embedding_type: str | None = None) -> None:
    """llama.cpp's own quantizer (what the llama-quantize tool calls), metadata copied as it is.
    `embedding_type` (e.g. F16): the token embedding and output tensors stored in that type, as
    `llama-quantize --token-embedding-type F16 --output-tensor-type F16` does."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant_type}")
    params.nthread = threads
    if embedding_type:
        params.token_embedding_type = params.output_tensor_type = getattr(llama_cpp, f"GGML_TYPE_{embedding_type}")
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if code != 0:
        sys.exit(f"llama_model_quantize returned {code}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("convert")
    step.add_argument("converter_dir", type=Path)
    step.add_argument("model_dir", type=Path)
    step.add_argument("out", type=Path)
    step.add_argument("--end-of-turn", type=int, required=True)
    step.add_argument("--name", required=True, help="general.name in the GGUF metadata")
    step.add_argument("--space-at-start-only", action="store_true",
                      help="the tokenizer adds '▁' at the start of the text only, not after special tokens")
    step = steps.add_parser("quantize")
    step.add_argument("source", type=Path)
    step.add_argument("out", type=Path)
    step.add_argument("--type", required=True)
    step.add_argument("--threads", type=int, default=0)
    step.add_argument("--embedding-type", help="the token embedding and output tensors' type (default: the quantizer's)")
    args = parser.parse_args(argv)
    if args.step == "convert":
        convert(args.converter_dir, args.model_dir, args.out, args.end_of_turn, args.name, args.space_at_start_only)
    else:
        quantize(args.source, args.out, args.type, args.threads, args.embedding_type)


if __name__ == "__main__":
    main()
