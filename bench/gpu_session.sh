#!/usr/bin/env bash
# The GPU benchmark session behind bench/results/*-h200.json, on a 2-GPU machine whose python has
# torch/transformers/peft/accelerate but neither the project's pins nor pydantic/bitsandbytes.
#   PART=train|generate|all  OUT=results-folder  bash bench/gpu_session.sh
# Inputs travel in .gpu-carry/ (git-ignored): the tokenizer folder without tokenizer.json (older
# `tokenizers` reject its merges; the fast tokenizer is rebuilt from tokenizer.model), the flashcards
# JSON, and bitsandbytes unpacked with only its CUDA 13.0 library; wheels for pydantic in .whl/.
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
PART=${PART:-all}
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD/.gpu-carry/site:$PWD
C=.gpu-carry
DATA=(--tokenizer $C/tokenizer --model-config $C/tokenizer --flashcards $C/medical_flashcards_test_3396.json)

nvidia-smi --query-gpu=index,name,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 - <<'EOF'
import inspect, torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__, "gpus", torch.cuda.device_count())
try:
    from torch.nn.attention.varlen import varlen_attn
    print("varlen_attn", inspect.signature(varlen_attn))
except Exception as exc:
    print("varlen_attn unavailable:", exc)
EOF

if [[ $PART == train || $PART == all ]]; then
  CUDA_VISIBLE_DEVICES=0 timeout ${TRAIN_TIMEOUT:-360} python3 bench/bench_train_gpu.py "${DATA[@]}" \
    ${RECIPES:+--recipes $RECIPES} --out "$OUT/train_1gpu.json" 2>&1 | tee "$OUT/train_1gpu.log" | grep -v -i warn
  timeout ${DDP_TIMEOUT:-150} accelerate launch --config_file configs/accelerate/ddp.yaml bench/bench_train_gpu.py \
    "${DATA[@]}" --recipes ${DDP_RECIPES:-bf16_padding_free_16k} --out "$OUT/train_2gpu.json" 2>&1 \
    | tee "$OUT/train_2gpu.log" | grep -v -i warn | tail -20
fi
if [[ $PART == generate || $PART == all ]]; then
  CUDA_VISIBLE_DEVICES=0 timeout ${GENERATE_TIMEOUT:-400} python3 bench/bench_generate_gpu.py "${DATA[@]}" \
    --out "$OUT/generate.json" 2>&1 | tee "$OUT/generate.log" | grep -v -i warn
fi
