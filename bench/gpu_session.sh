#!/usr/bin/env bash
# The GPU benchmark session behind bench/results/*-h200.json, on a 2-GPU machine whose python has
# torch/transformers/peft/accelerate but none of trl/datasets/pydantic/bitsandbytes.
#   PART=all|train|sft|generate|ddp  OUT=results-folder  bash bench/gpu_session.sh
# Inputs travel in .gpu-carry/ (git-ignored): the tokenizer folder without tokenizer.json (its legacy
# merges are rebuilt from tokenizer.model), the flashcards JSON, and bitsandbytes unpacked with only its
# CUDA 13.0 library; wheels in .whl/: the project's pins of transformers, trl, datasets (+ dill,
# multiprocess, fsspec), pydantic.
# PART=all: generation on GPU 1 while GPU 0 runs the training benchmarks, then DDP on both.
# Results (JSON, and the profile table) go to $OUT; full logs to $LOGS.
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
PART=${PART:-all}
OUT=${OUT:-/tmp/bench-out}
LOGS=${LOGS:-/tmp/bench-logs}
mkdir -p "$OUT" "$LOGS"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/.gpu-carry/site:$PWD
C=.gpu-carry
DATA=(--tokenizer $C/tokenizer --model-config $C/tokenizer --flashcards $C/medical_flashcards_test_3396.json)
quiet() { grep -v -i -E "warn|it/s\]|examples/s\]"; }

nvidia-smi --query-gpu=index,name,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 - <<'EOF'
import torch, transformers, trl, datasets, peft, accelerate, pyarrow
print("torch", torch.__version__, "transformers", transformers.__version__, "trl", trl.__version__,
      "datasets", datasets.__version__, "peft", peft.__version__, "accelerate", accelerate.__version__,
      "pyarrow", pyarrow.__version__, "gpus", torch.cuda.device_count())
EOF

generate() {
  CUDA_VISIBLE_DEVICES=${1:-0} timeout ${GENERATE_TIMEOUT:-420} python3 bench/bench_generate_gpu.py "${DATA[@]}" \
    --out "$OUT/generate.json" > "$LOGS/generate.log" 2>&1
  quiet < "$LOGS/generate.log" | tail -12
}
if [[ $PART == all ]]; then
  generate 1 & GENERATE=$!
fi
if [[ $PART == all || $PART == train ]]; then
  CUDA_VISIBLE_DEVICES=0 timeout ${TRAIN_TIMEOUT:-150} python3 bench/bench_train_gpu.py "${DATA[@]}" \
    --recipes ${RECIPES:-seed_qlora_b4x2_ckpt bf16_padding_free_16k} --out "$OUT/train_1gpu.json" 2>&1 \
    | tee "$LOGS/train_1gpu.log" | quiet | tail -8
fi
if [[ $PART == all || $PART == sft ]]; then
  # one process per variant: Liger patches transformers' classes process-wide
  for variant in ${VARIANTS:-bf16_no_liger default_no_liger bf16 default bf16_16k bf16_sequences_b4x2}; do
    CUDA_VISIBLE_DEVICES=0 timeout ${SFT_TIMEOUT:-150} python3 bench/bench_sft_gpu.py "${DATA[@]}" --variants $variant \
      --profile ${PROFILE:-bf16} --out "$OUT/sft_1gpu_$variant.json" 2>&1 | tee -a "$LOGS/sft_1gpu.log" | quiet \
      | grep -E "^[a-z0-9_]+: |Error|error" | tail -3
  done
fi
if [[ $PART == generate ]]; then generate 0; fi
if [[ $PART == all ]]; then wait $GENERATE; fi
if [[ $PART == all || $PART == ddp ]]; then
  timeout ${DDP_TIMEOUT:-150} accelerate launch --config_file configs/accelerate/ddp.yaml bench/bench_sft_gpu.py \
    "${DATA[@]}" --variants ${DDP_VARIANTS:-default bf16} --out "$OUT/sft_2gpu.json" 2>&1 \
    | tee "$LOGS/sft_2gpu.log" | quiet | grep -E "^[a-z0-9_]+: |Error|error" | tail -10
fi
