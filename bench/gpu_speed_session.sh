#!/usr/bin/env bash
# The one-H200 session behind bench/results/<date>-h200-speed.json: TinyLlama-1.1B training throughput at the
# default step size (8,192 tokens), eager and with compiled decoder layers, bf16 and QLoRA; then the Space's
# streaming speed (bench_generate_gpu.py, Space section only). One `device run` from the repo root, with
#   carry: .whl .gpu-carry/tok .gpu-carry/data .gpu-carry/bnb
# .whl/: the project's pins that the GPU's python lacks (see bench/gpu_quality_session.sh); .gpu-carry/bnb:
# the bitsandbytes wheel unpacked with only its CUDA 13.0 library (the whole wheel is 43 MB).
#   PARTS="train generate"  VARIANTS=...  OUT=results-folder  bash bench/gpu_speed_session.sh
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TORCH_LOGS=recompiles
OUT=${OUT:-/tmp/bench-out}
LOGS=${LOGS:-/tmp/bench-logs}
PARTS=${PARTS:-train generate}
mkdir -p "$OUT" "$LOGS"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu-carry/bnb:$PWD
C=.gpu-carry
DATA=(--tokenizer $C/tok --model-config $C/tok --flashcards $C/data/medical_flashcards_test_3396.json)
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, transformers, trl, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)"

if [[ $PARTS == *train* ]]; then
  # one process per variant: Liger patches transformers' classes process-wide, and compiled code stays cached
  for variant in ${VARIANTS:-bf16_8k_compiled qlora_8k_compiled bf16_8k}; do
    timeout ${SFT_TIMEOUT:-110} python3 bench/bench_sft_gpu.py "${DATA[@]}" --variants $variant --steps ${STEPS:-30} \
      --warmup ${WARMUP:-5} --profile ${PROFILE:-bf16_8k bf16_8k_compiled} --out "$OUT/sft_$variant.json" \
      > "$LOGS/sft_$variant.log" 2>&1
    echo "exit $? $(grep -E "^$variant: " "$LOGS/sft_$variant.log" | cut -c1-400)"
    grep -E "Error|error:" "$LOGS/sft_$variant.log" | grep -v -i warn | tail -3
  done
fi
if [[ $PARTS == *generate* ]]; then
  timeout ${GENERATE_TIMEOUT:-200} python3 bench/bench_generate_gpu.py "${DATA[@]}" --batch-sizes --static-batch-sizes \
    --out "$OUT/generate.json" > "$LOGS/generate.log" 2>&1
  echo "generate exit $?"; grep -v -i -E "warn|it/s\]" "$LOGS/generate.log" | tail -12
fi
# at most 8 files come back from a call: the variants' results in one file, the logs in one archive
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
parts = sorted(out.glob("sft_*.json"))
if parts:
    merged = {p.stem[4:]: json.loads(p.read_text()) for p in parts}
    (out / "sft.json").write_text(json.dumps(merged, indent=1))
    for p in parts:
        p.unlink()
PY
tar czf "$OUT/logs.tgz" -C "$LOGS" . && rm -rf "$LOGS"
ls "$OUT"
