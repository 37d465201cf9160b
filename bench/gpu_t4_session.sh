#!/usr/bin/env bash
# The session behind bench/results/<date>-<gpu>-t4-constraints.json (bench/bench_t4_constraints.py), on one H100
# or H200, in back-to-back device calls (the machine stays warm ~30 s between them; what a call installs and
# starts lives on in /tmp/t4). Build the carry here first:
#   python bench/t4_carry.py --wheels ../main/.whl --bnb ../main/.gpu-carry/bnb --tokenizer ../shared/data/tokenizer
# then, from the repo root:
#   PART=1 bash bench/gpu_t4_session.sh   carry: .gpu-carry/t4/one   timeout_s: 300  (~2 min)
#     wheels and inputs; the bf16 default's speed on this GPU (TinyLlama-1.1B, 8,192-token steps), alone on it
#   PART=2 bash bench/gpu_t4_session.sh   carry: .gpu-carry/t4/two   timeout_s: 600  (10 min)
#     joins and checks the GGUF, builds the real base, prepares the flashcards, then starts at once (they share
#     the GPU; the summary says which overlapped): the notebook recipe under the T4's constraints (the long one:
#     1,011 steps, about 7-10 minutes), the T4 default and the Space's fp16 decode loop, fp16/bf16 loss parity,
#     the bf16 default's time to quality, TinyLlama-1.1B QLoRA and fp16 LoRA under the constraints, and the GPU
#     tests (the fallback kernel against flash); waits until the call's end nears, summarises what has finished
#   PART=collect bash bench/gpu_t4_session.sh   no carry, timeout_s: 300, only if PART=2 said "still running":
#     within 30 s of PART=2's end; waits for the rest (the recipe and its evaluation) and summarises again
# Results come back in $OUT: the summary JSON and parts.tgz (every part's JSON and log, the GPU tests' output).
# Rehearse the plumbing on a CPU first (tiny base, a few steps; nothing is constrained there):
#   for p in 1 2; do PY=.venv/bin/python TINY=--tiny PART=$p bash bench/gpu_t4_session.sh; done
set -o pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH=/tmp/site:/tmp/t4/bnb:/tmp/t4/repo
T=/tmp/t4
OUT=${OUT:-$T/out}
mkdir -p "$T/logs" "$T/results" "$OUT"
PY=${PY:-python3}
B=($PY bench/bench_t4_constraints.py --base $T/real-base --tokenizer $T/tok --flashcards
   $T/data/medical_flashcards_test_3396.json --work $T/work --out $T/results $TINY)
# the recipe first: it is the longest
PARTS=(reference default parity quality-bf16 tinyllama)

start() {  # NAME COMMAND: in the background, in a session of its own (it outlives the call); its exit status in .rc
  local name=$1; shift
  setsid bash -c "cd $T/repo && $* > $T/logs/$name.log 2>&1; echo \$? > $T/logs/$name.rc" &
}

part() {
  echo "$(printf '%q ' "${B[@]:0:2}") $1 $(printf '%q ' "${B[@]:2}")"
}

wait_for() {  # until every part named has an exit status, or $1 seconds
  local deadline=$((SECONDS + $1)); shift
  for name in "$@"; do
    while [[ ! -f $T/logs/$name.rc && $SECONDS -lt $deadline ]]; do sleep 2; done
    echo "$name: exit $(cat $T/logs/$name.rc 2>/dev/null || echo 'still running')"
  done
}

collect() {  # the summary of what has finished, and every part's JSON and log, in two files
  (cd $T/repo && $(part summary) > $T/logs/summary.log 2>&1) || tail -20 $T/logs/summary.log
  cp $T/results/*-t4-constraints.json "$OUT"/ 2>/dev/null
  tar czf "$OUT/parts.tgz" -C $T work/parts logs 2>/dev/null
  ls -la "$OUT"
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
  timeout 200 $(part speed-bf16) > $T/logs/speed-bf16.log 2>&1; echo $? > $T/logs/speed-bf16.rc  # alone on the GPU
  echo "speed-bf16: exit $(cat $T/logs/speed-bf16.rc)"; grep -E "Error|error:" $T/logs/speed-bf16.log | tail -3
  tar czf "$OUT/parts.tgz" -C $T work/parts logs
  ;;
2)
  cat $T/gguf.gz.part-a .gpu-carry/t4/two/gguf.gz.part-b | gunzip > $T/SmolLM2-135M-Instruct.Q4_1.gguf || exit 1
  cd $T/repo
  $PY -m training build-real-base --gguf $T/SmolLM2-135M-Instruct.Q4_1.gguf --output $T/real-base \
    > $T/logs/real-base.log 2>&1 || { tail -5 $T/logs/real-base.log; exit 1; }  # checks the GGUF's sha256
  $(part prepare) > $T/logs/prepare.log 2>&1 || { tail -5 $T/logs/prepare.log; exit 1; }
  for name in "${PARTS[@]}"; do
    start $name "$(part $name)"
    sleep 2
  done
  start gpu-tests "$PY -m pytest tests/test_packing.py -m gpu -q -p no:cacheprovider"
  wait_for $((${WAIT_S:-600} - SECONDS - 45)) gpu-tests "${PARTS[@]}"
  tail -3 $T/logs/gpu-tests.log
  collect
  ;;
collect)
  wait_for ${WAIT_S:-240} "${PARTS[@]}"
  collect
  ;;
esac
