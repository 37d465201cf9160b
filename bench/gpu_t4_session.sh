#!/usr/bin/env bash
# The session behind bench/results/<date>-<gpu>-t4-constraints.json (bench/bench_t4_constraints.py), on one H100
# or H200, in two back-to-back device calls (the machine stays warm ~30 s between them; what PART=1 installs and
# starts lives in /tmp/t4). Build the carry here first:
#   python bench/t4_carry.py --wheels ../main/.whl --bnb ../main/.gpu-carry/bnb --tokenizer ../shared/data/tokenizer
# then, from the repo root:
#   PART=1 bash bench/gpu_t4_session.sh   carry: .gpu-carry/t4/one   timeout_s: 420  (~3 min)
#     wheels; TinyLlama-1.1B QLoRA and fp16 LoRA under the T4's constraints, then the bf16 default's speed
#     unconstrained, each alone on the GPU (their tokens/s are the figures of record)
#   PART=2 bash bench/gpu_t4_session.sh   carry: .gpu-carry/t4/two   timeout_s: 600  (~9 min)
#     joins and checks the GGUF, builds the real base, prepares the flashcards, then runs at once (they share the
#     GPU, and the summary says which overlapped): the notebook recipe (the long one, ~7 min), the T4 default and
#     the Space's fp16 decode loop, fp16/bf16 loss parity, the bf16 default's time to quality, and the GPU tests
#     (the fallback kernel against flash, tests/test_packing.py -m gpu); waits, summarises
#   PART=collect  (only if PART=2 ran out of time; within 30 s of it) waits WAIT_S more and summarises again
# Results come back in $OUT: the summary JSON, parts.tgz (every part's JSON and log, the GPU tests' output).
# Rehearse the plumbing on a CPU first (tiny base, a few steps; nothing is constrained there):
#   PY=.venv/bin/python TINY=--tiny PART=1 bash bench/gpu_t4_session.sh && PY=.venv/bin/python TINY=--tiny PART=2 bash bench/gpu_t4_session.sh
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH=/tmp/site:/tmp/t4/bnb:/tmp/t4/repo
T=/tmp/t4
OUT=${OUT:-$T/out}
mkdir -p "$T/logs" "$T/results" "$OUT"
PY=${PY:-python3}
B=($PY bench/bench_t4_constraints.py --base $T/real-base --tokenizer $T/tok --flashcards
   $T/data/medical_flashcards_test_3396.json --work $T/work --out $T/results $TINY)
PARTS=(reference default parity quality-bf16)

collect() {  # the summary and every part's JSON and log, in three files
  (cd $T/repo && "${B[@]:0:2}" summary "${B[@]:2}" > $T/logs/summary.log 2>&1) || tail -20 $T/logs/summary.log
  cp $T/results/*-t4-constraints.json "$OUT"/ 2>/dev/null
  tar czf "$OUT/parts.tgz" -C $T work/parts logs 2>/dev/null
  ls -la "$OUT"
}

wait_for() {  # until every part named has an exit status, or $1 seconds
  local deadline=$((SECONDS + $1)); shift
  for part in "$@"; do
    while [[ ! -f $T/logs/$part.rc && $SECONDS -lt $deadline ]]; do sleep 2; done
    echo "$part: exit $(cat $T/logs/$part.rc 2>/dev/null || echo 'still running')"
  done
}

case ${PART:?} in
1)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  [[ -n $TINY ]] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-carry/t4/one/whl/*.whl || exit 1  # (a rehearsal uses its own environment)
  C=.gpu-carry/t4/one
  cp -r $C/bnb $C/tok $C/data $C/gguf.gz.part-a $T/
  # A snapshot of the tree: the next call re-copies the working tree, and running parts must not change under it.
  rm -rf $T/repo && mkdir -p $T/repo && cp -r common training hub space configs bench tests pyproject.toml $T/repo/
  cd $T/repo
  $PY -c "import torch, transformers, trl, peft, bitsandbytes; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__)" \
    || [[ -n $TINY ]] || exit 1
  for part in tinyllama speed-bf16; do  # alone on the GPU: their tokens/s are the figures of record
    timeout 200 "${B[@]:0:2}" $part "${B[@]:2}" > $T/logs/$part.log 2>&1; echo $? > $T/logs/$part.rc
    echo "$part: exit $(cat $T/logs/$part.rc)"; grep -E "Error|error:" $T/logs/$part.log | grep -v -i warn | tail -3
  done
  tar czf "$OUT/parts.tgz" -C $T work/parts logs
  ;;
2)
  cat $T/gguf.gz.part-a .gpu-carry/t4/two/gguf.gz.part-b | gunzip > $T/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
  cd $T/repo
  $PY -m training build-real-base --gguf $T/SmolLM2-135M-Instruct.Q4_1.gguf --output $T/real-base \
    > $T/logs/real-base.log 2>&1 || { tail -5 $T/logs/real-base.log; exit 1; }  # checks the GGUF's sha256
  "${B[@]:0:2}" prepare "${B[@]:2}" > $T/logs/prepare.log 2>&1 || { tail -5 $T/logs/prepare.log; exit 1; }
  for part in "${PARTS[@]}"; do  # the reference first: it is the longest
    setsid bash -c "$(printf '%q ' "${B[@]:0:2}") $part $(printf '%q ' "${B[@]:2}") > $T/logs/$part.log 2>&1; \
      echo \$? > $T/logs/$part.rc" &
    sleep 2
  done
  setsid bash -c "$PY -m pytest tests/test_packing.py -m gpu -q -p no:cacheprovider > $T/logs/gpu-tests.log 2>&1; \
    echo \$? > $T/logs/gpu-tests.rc" &
  wait_for $((${WAIT_S:-600} - SECONDS - 40)) gpu-tests "${PARTS[@]}"
  tail -3 $T/logs/gpu-tests.log
  collect
  ;;
collect)
  wait_for ${WAIT_S:-540} "${PARTS[@]}"
  collect
  ;;
esac
