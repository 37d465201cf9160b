#!/usr/bin/env bash
# The one-GPU session behind bench/results/<date>-<gpu>-medqa-rotations.json (bench/bench_medqa_rotations.py):
# exp1 trained at the default on all real flashcards, then the base and exp1 scored on all 1,273 MedQA questions
# in four answer orders. The GPU's python has torch/transformers/peft/accelerate but not our other packages; the
# GGUF of the real base (98 MB) is larger than one device call carries (64 MiB), so, as in
# gpu_quality_session.sh, it travels in three parts in back-to-back calls to the same warm machine:
#   PART=1  wheels (.whl/: gpu_quality_session.sh's: transformers 5.24, trl, datasets + dill/multiprocess/fsspec,
#           peft, pydantic + core/annotated-types/typing-inspection, gguf, liger-kernel, rouge-score, nltk),
#           part 1 of the GGUF and the real data: flashcards and MedQA (.gpu-carry/p1, .gpu-carry/data)
#   PART=2  part 2 (.gpu-carry/p2)
#   PART=3  part 3; joins and checks the GGUF, builds the real base, runs the benchmark (about two minutes)
#           and copies its result and logs to $OUT
# .gpu-carry/ and .whl/ are git-ignored (.git/info/exclude). Each PART is one `device run` from the repo root.
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
  python3 -c "import torch, transformers, trl, datasets, peft, pydantic, gguf; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
  ;;
2)
  cp .gpu-carry/p2/* $S/gguf/ && ls -la $S/gguf
  ;;
3)
  cp .gpu-carry/p3/* $S/gguf/
  cat $S/gguf/gguf.part0* > $S/SmolLM2-135M-Instruct.Q4_1.gguf && rm $S/gguf/gguf.part0*
  rm -rf /tmp/repo && mkdir -p /tmp/repo && cp -r common training hub space configs bench /tmp/repo/
  cd /tmp/repo
  python3 -m training build-real-base --gguf $S/SmolLM2-135M-Instruct.Q4_1.gguf --output $S/real-base || exit 1
  timeout ${BENCH_TIMEOUT:-420} python3 bench/bench_medqa_rotations.py --base $S/real-base \
    --flashcards $S/data/medical_flashcards_test_3396.json --medqa $S/data/medqa_usmle_4options_test.jsonl \
    --work $S/rotations --out $S/results 2>&1 | grep -v -i -E "warn|it/s\]|examples/s\]" | tail -20
  echo "exit ${PIPESTATUS[0]}"
  cp $S/results/* "$OUT"/ 2>/dev/null
  tar czf "$OUT/medqa-rotations-logs.tgz" -C $S/rotations logs 2>/dev/null
  ls "$OUT"
  ;;
esac
