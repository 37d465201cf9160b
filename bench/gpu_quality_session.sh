#!/usr/bin/env bash
# The real-weight GPU session behind bench/results/<date>-<gpu>-quality.json and <date>-<gpu>-time-to-quality*.json
# (the GPU named from torch), on one GPU whose python has torch/transformers/peft/accelerate but not our other
# packages.
# The GGUF of the real base (98 MB) is larger than one device call carries (64 MiB), so it travels in
# three parts in three back-to-back calls to the same warm machine:
#   PART=1  wheels (.whl/: transformers 5.24, trl, datasets + dill/multiprocess/fsspec, peft, pydantic
#           + core/annotated-types/typing-inspection, gguf, liger-kernel, rouge-score, nltk), part 1 and the
#           real data (.gpu-carry/p1, .gpu-carry/data)
#   PART=2  part 2 and the TinyLlama tokenizer/config (.gpu-carry/p2, .gpu-carry/tok)
#   PART=3  part 3; joins and checks the GGUF, builds the real base, then starts the benchmarks in the
#           background (they outlive the call) and waits
#   PART=wait  waits for them and copies the results to $OUT
# .gpu-carry/ is git-ignored (.git/info/exclude). Each PART is one `device run` from the repo root.
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH=/tmp/site:/tmp/repo
S=/tmp/session
mkdir -p $S/gguf $S/results
case ${PART:?} in
1)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  cp .gpu-carry/p1/* $S/gguf/ && cp -r .gpu-carry/data $S/
  python3 -c "import torch, transformers, trl, datasets, peft, pydantic, gguf, liger_kernel; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
  ;;
2)
  cp .gpu-carry/p2/* $S/gguf/ && cp -r .gpu-carry/tok $S/
  ls -la $S/gguf
  ;;
3)
  cp .gpu-carry/p3/* $S/gguf/
  cat $S/gguf/gguf.part0* > $S/SmolLM2-135M-Instruct.Q4_1.gguf && rm $S/gguf/gguf.part0*
  # A snapshot of the tree: later calls re-copy the working tree, and the benchmarks must not change under themselves.
  rm -rf /tmp/repo && mkdir -p /tmp/repo && cp -r common training hub space configs bench /tmp/repo/
  cd /tmp/repo
  python3 -m training build-real-base --gguf $S/SmolLM2-135M-Instruct.Q4_1.gguf --output $S/real-base || exit 1
  D=$S/data
  # TinyLlama-1.1B (random weights) at the default the grid chose: throughput alone on the GPU, first.
  timeout 240 python3 bench/bench_sft_gpu.py --tokenizer $S/tok --model-config $S/tok --flashcards $D/medical_flashcards_test_3396.json \
    --variants bf16 --steps 40 --warmup 8 --out $S/results/tinyllama-sft.json > $S/sft.log 2>&1
  grep -E "^[a-z0-9_]+: " $S/sft.log | tail -3
  setsid bash -c "python3 bench/bench_time_to_quality.py --base $S/real-base --flashcards $D/medical_flashcards_test_3396.json \
      --work $S/ttq --out $S/results --concurrency ${TTQ_CONCURRENCY:-4} > $S/ttq.log 2>&1; echo \$? > $S/ttq.rc" &
  setsid bash -c "python3 bench/bench_quality.py --setting gpu --base $S/real-base --flashcards $D/medical_flashcards_test_3396.json \
      --medqa $D/medqa_usmle_4options_test.jsonl --work $S/quality --out $S/results > $S/quality.log 2>&1; \
      echo \$? > $S/quality.rc" &
  sleep ${WAIT_S:-420}
  tail -n 4 $S/ttq.log $S/quality.log
  ;;
wait)
  for i in $(seq ${WAIT_S:-560}); do [[ -f $S/ttq.rc && -f $S/quality.rc ]] && break; sleep 1; done
  tail -25 $S/ttq.log; tail -12 $S/quality.log; cat $S/*.rc 2>/dev/null
  cp $S/results/* "$OUT"/ 2>/dev/null
  for f in $S/ttq/runs/*/metrics.json; do n=$(basename $(dirname $f)); cp $f "$OUT/metrics-$n.json" 2>/dev/null; done
  ls "$OUT"
  ;;
esac
