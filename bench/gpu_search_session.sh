#!/usr/bin/env bash
# The one-GPU session behind bench/results/<date>-<gpu>-search.json (bench/bench_search.py): a study of 24
# trials of exp1 on the real base, six at a time, then the best trial and exp1 evaluated. The GPU's python
# has torch/transformers/peft/accelerate but not our other packages; the GGUF of the real base (98 MB) is
# larger than one device call carries (64 MiB), so, as in gpu_quality_session.sh, it travels in three parts
# in back-to-back calls to the same warm machine:
#   PART=1  wheels (.whl/: gpu_quality_session.sh's (transformers 5.24, trl, datasets + dill/multiprocess/
#           fsspec, peft, pydantic + core/annotated-types/typing-inspection, gguf, liger-kernel, rouge-score,
#           nltk) plus optuna-5.1.0 and colorlog (0.45 MB together; the journal storage needs neither
#           sqlalchemy nor alembic), part 1 of the GGUF and the real flashcards (.gpu-carry/p1, .gpu-carry/data)
#   PART=2  part 2 (.gpu-carry/p2)
#   PART=3  part 3; joins and checks the GGUF, builds the real base, then starts the benchmark in the
#           background (it outlives the call) and waits WAIT_S seconds
#   PART=wait  waits for it and copies the results (JSON, plot, the study's report and logs) to $OUT
# .gpu-carry/ and .whl/ are git-ignored (.git/info/exclude). Each PART is one `device run` from the repo root.
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
# Six workers share the GPU, each capped at its sixth of the memory: less fragmentation under the cap.
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export PYTHONPATH=/tmp/site:/tmp/repo
S=/tmp/session
mkdir -p $S/gguf $S/results
case ${PART:?} in
1)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  cp .gpu-carry/p1/* $S/gguf/ && cp -r .gpu-carry/data $S/
  python3 -c "import torch, transformers, trl, datasets, peft, pydantic, gguf, optuna; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'optuna', optuna.__version__)"
  ;;
2)
  cp .gpu-carry/p2/* $S/gguf/ && ls -la $S/gguf
  ;;
3)
  cp .gpu-carry/p3/* $S/gguf/
  cat $S/gguf/gguf.part0* > $S/SmolLM2-135M-Instruct.Q4_1.gguf && rm $S/gguf/gguf.part0*
  # A snapshot of the tree: later calls re-copy the working tree, and the benchmark must not change under itself.
  rm -rf /tmp/repo && mkdir -p /tmp/repo && cp -r common training hub space configs bench /tmp/repo/
  cd /tmp/repo
  python3 -m training build-real-base --gguf $S/SmolLM2-135M-Instruct.Q4_1.gguf --output $S/real-base || exit 1
  setsid bash -c "python3 bench/bench_search.py --base $S/real-base --flashcards $S/data/medical_flashcards_test_3396.json \
      --work $S/search --out $S/results --workers ${WORKERS:-6} --trials ${TRIALS:-24} > $S/search.log 2>&1; \
      echo \$? > $S/search.rc" &
  sleep ${WAIT_S:-540}
  tail -n 3 $S/search.log; tail -c 400 $S/search/logs/search.log
  ;;
wait)
  for i in $(seq ${WAIT_S:-560}); do [[ -f $S/search.rc ]] && break; sleep 1; done
  tail -30 $S/search.log; cat $S/search.rc 2>/dev/null
  cp $S/results/* "$OUT"/ 2>/dev/null
  # at most 8 files come back from a call: the study's report and every log in one archive
  tar czf "$OUT/search-study.tgz" -C $S/search search/smollm2/README.md search/smollm2/study.json \
      search/smollm2/trials.json search/smollm2/importances.png logs search/smollm2/logs 2>/dev/null
  ls "$OUT"
  ;;
esac
