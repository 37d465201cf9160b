#!/usr/bin/env bash
# One GPU session (one H100 or H200, back-to-back device calls: the machine stays warm ~30 s between them, and what
# a call installs and starts lives on under /tmp/s) behind three results files, named after the GPU that ran them:
#   <date>-<gpu>-t4-constraints.json   bench/bench_t4_constraints.py (issue #26): a T4's plan under its constraints
#   <date>-<gpu>-search.json           bench/bench_search.py (issue #29): 24 trials of exp1, six at a time
#   <date>-<gpu>-medqa-rotations.json  bench/bench_medqa_rotations.py (issue #30): all of MedQA in four orders
# Thirty minutes of device time do not fit the three one after another, so after part 1 they share the GPU; each
# results file says what ran beside it (`shared_gpu_with`), and its figures are read that way.
# Build the carry here first (.gpu-carry/ is git-ignored: .git/info/exclude):
#   python bench/gpu_carry.py --wheels .whl --bnb .gpu-carry/bnb --tokenizer ../shared/data/tokenizer
# then, from the repo root, one device call each:
#   PART=1 bash bench/gpu_shared_session.sh   carry .gpu-carry/session/call1, timeout_s 300 (~3 min): wheels and inputs;
#          the bf16 default's speed on this GPU (TinyLlama-1.1B, 8,192-token steps), alone on it
#   PART=2 bash bench/gpu_shared_session.sh   carry .gpu-carry/session/call2 (the GGUF's second piece)
#   PART=3 bash bench/gpu_shared_session.sh   carry .gpu-carry/session/call3, timeout_s 600: joins and checks the GGUF,
#          builds the real base, prepares the flashcards, starts every other part (the T4 parts and the GPU tests,
#          the search, the MedQA rotations), waits until the call's end nears and collects what has finished
#   PART=collect bash bench/gpu_shared_session.sh   no carry: waits for the rest (WAIT_S) and collects again
# Results come back in $OUT: the three JSON files (the search's plot beside its own) and one archive of every part's JSON and log.
# The search alone (its carry has no bitsandbytes or MedQA, so the GGUF fits two calls; CARRY names it):
#   python bench/gpu_carry.py --wheels .whl --bnb <empty folder> --medqa <empty file> --tokenizer ../shared/data/tokenizer \
#       --out .gpu-carry/search
#   SPEED=0 PART=1 CARRY=$PWD/.gpu-carry/search bash bench/gpu_shared_session.sh            carry .gpu-carry/search/call1
#   export CARRY=$PWD/.gpu-carry/search T4_PARTS= BENCHES=search WAIT_S=585
#   PART=2 bash bench/gpu_shared_session.sh && PART=3 bash bench/gpu_shared_session.sh     carry .gpu-carry/search/call2
#   PART=collect bash bench/gpu_shared_session.sh (WAIT_S: what the device time leaves)
# A study not evaluated when a collect ends (or still running: recorded so far, `--hand-off`) comes back as study.tgz.part-*;
# here: cat them | tar xz, then bench_search.py --evaluate-only --work <its search folder> --base <the real base>.
# Rehearse the plumbing on the CPU (tiny base, a few steps; nothing is constrained there):
#   for p in 1 3; do PY=.venv/bin/python SMOKE=1 PART=$p bash bench/gpu_shared_session.sh; done
set -o pipefail
# USE_HUB_KERNELS=NO: transformers 5.25 would otherwise fetch Hub kernels (rotary) when `kernels` is installed
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 USE_HUB_KERNELS=NO
# The search's six workers share the GPU, each capped at its sixth: less fragmentation under the cap.
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=${SESSION_DIR:-/tmp/s}
export PYTHONPATH=$S/site:$S/bnb:$S/repo CODE_COMMIT_FILE=$S/code.json  # the commit the tree was sent from
OUT=${OUT:-$S/out}
C=${CARRY:-$PWD/.gpu-carry/session}  # where a call finds the carried folders
mkdir -p "$S/logs" "$S/results" "$OUT"
PY=${PY:-python3}
FLASHCARDS=$S/data/medical_flashcards_test_3396.json
MEDQA=$S/data/medqa_usmle_4options_test.jsonl
if [[ -n $SMOKE ]]; then  # the CPU rehearsal: the benches' own tiny settings, the project's data
  T4=(--tiny) SEARCH=(--smoke --trials 4 --workers 2) ROTATIONS=(--smoke)
else
  T4=() SEARCH=(--trials ${TRIALS:-24} --workers ${WORKERS:-6}) ROTATIONS=()
fi
# What part 3 starts (T4_PARTS, BENCHES: a shorter list, or empty, re-runs only what failed); the recipe first: it is the longest
T4_PARTS=(${T4_PARTS-reference default parity quality-bf16 tinyllama})
BENCHES=(${BENCHES-search medqa-rotations})
ALL=(gpu-tests "${T4_PARTS[@]}" "${BENCHES[@]}")

t4() {  # PART: bench_t4_constraints.py's command line for one of its parts
  echo "$PY bench/bench_t4_constraints.py $1 --base $S/real-base --tokenizer $S/tok --flashcards $FLASHCARDS" \
       "--work $S/t4 --out $S/results ${T4[*]}"
}

start() {  # NAME COMMAND: in the background, in a session of its own (it outlives the call); its exit status in .rc
  local name=$1; shift
  setsid bash -c "cd $S/repo && $* > $S/logs/$name.log 2>&1; echo \$? > $S/logs/$name.rc" &
}

wait_for() {  # SECONDS NAME...: until every part named has an exit status, or the seconds are up
  local deadline=$((SECONDS + $1)); shift
  for name in "$@"; do
    while [[ ! -f $S/logs/$name.rc && $SECONDS -lt $deadline ]]; do sleep 2; done
    echo "$name: exit $(cat $S/logs/$name.rc 2>/dev/null || echo 'still running')"
  done
}

collect() {  # the T4 summary of what has finished, every results file, and one archive of the parts and logs
  (cd $S/repo && $(t4 summary) > $S/logs/t4-summary.log 2>&1) || tail -5 $S/logs/t4-summary.log
  cp $S/results/*.json $S/results/*.png "$OUT"/ 2>/dev/null
  tar czf "$OUT/parts.tgz" -C $S t4/parts logs search/search/smollm2/README.md search/search/smollm2/trials.json \
      search/logs rotations/logs 2>/dev/null
  # A study not yet evaluated when the device time ends (or not finished: then recorded so far): what
  # `bench_search.py --evaluate-only` needs elsewhere, in pieces of at most 15 MiB
  if [[ -d $S/search && -z $(ls $S/results/*-search.json 2>/dev/null) ]]; then
    local files=$(cd $S/repo && $PY bench/bench_search.py --work $S/search --hand-off)
    [[ -z $files ]] || tar czf - -C $S --exclude='checkpoint-*' $files | split -b 15M - "$OUT/study.tgz.part-"
  fi
  ls -la "$OUT"
}

case ${PART:?} in
1)
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  [[ -n $SMOKE ]] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target $S/site $C/call1/whl/*.whl || exit 1  # (the rehearsal uses its own environment)
  cp -r $C/call1/bnb $C/call1/tok $C/call1/data $C/call1/code.json $S/ && cp $C/call1/gguf.gz.part-* $S/
  # A snapshot of the tree: later calls re-copy the working tree, and running parts must not change under it.
  rm -rf $S/repo && mkdir -p $S/repo && cp -r common training hub space configs bench tests pyproject.toml $S/repo/
  cd $S/repo
  $PY -c "import torch, transformers, trl, peft, optuna, liger_kernel; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__, 'optuna', \
optuna.__version__)" || [[ -n $SMOKE ]] || exit 1
  [[ ! -d $S/bnb/bitsandbytes ]] || $PY -c "import bitsandbytes; print('bitsandbytes', bitsandbytes.__version__)" \
    || [[ -n $SMOKE ]] || exit 1
  [[ ${SPEED:-1} == 1 ]] || exit 0
  timeout 200 $(t4 speed-bf16) > $S/logs/speed-bf16.log 2>&1; echo $? > $S/logs/speed-bf16.rc  # alone on the GPU
  echo "speed-bf16: exit $(cat $S/logs/speed-bf16.rc)"; grep -E "Error|error:" $S/logs/speed-bf16.log | tail -3
  exit $(cat $S/logs/speed-bf16.rc)  # the call's status is the speed run's (a grep finding no error is not a failure)
  ;;
2)
  cp $C/call2/gguf.gz.part-* $S/ && ls -la $S/gguf.gz.part-*
  ;;
3)
  # (a search-only carry, without bitsandbytes and MedQA, holds the GGUF in two calls: then no call3 folder)
  [[ -n $SMOKE ]] || { cp $C/call3/gguf.gz.part-* $S/ 2>/dev/null; ls $S/gguf.gz.part-* | sort -t- -k3 -n | \
    xargs cat | gunzip > $S/SmolLM2-135M-Instruct.Q4_1.gguf; } || exit 1
  cd $S/repo
  if [[ -n $SMOKE ]]; then
    $PY -m training build-tiny-base --output $S/real-base > $S/logs/real-base.log 2>&1
  else  # checks the GGUF's sha256
    $PY -m training build-real-base --gguf $S/SmolLM2-135M-Instruct.Q4_1.gguf --output $S/real-base > $S/logs/real-base.log 2>&1
  fi || { tail -5 $S/logs/real-base.log; exit 1; }
  if ((${#T4_PARTS[@]})); then
    $(t4 prepare) > $S/logs/prepare.log 2>&1 || { tail -5 $S/logs/prepare.log; exit 1; }
  fi
  start gpu-tests "$PY -m pytest tests/test_packing.py -m gpu -q -p no:cacheprovider"
  for name in "${T4_PARTS[@]}"; do
    start $name "$(t4 $name)"
    sleep 2
  done
  [[ " ${BENCHES[*]} " != *" search "* ]] || start search "$PY bench/bench_search.py --base $S/real-base \
      --flashcards $FLASHCARDS --work $S/search --out $S/results ${SEARCH[*]}"
  [[ " ${BENCHES[*]} " != *" medqa-rotations "* ]] || start medqa-rotations "$PY bench/bench_medqa_rotations.py \
      --base $S/real-base --flashcards $FLASHCARDS --medqa $MEDQA --work $S/rotations --out $S/results ${ROTATIONS[*]}"
  wait_for $((${WAIT_S:-600} - SECONDS - 45)) "${ALL[@]}"
  tail -3 $S/logs/gpu-tests.log
  collect
  ;;
collect)
  wait_for ${WAIT_S:-480} "${ALL[@]}"
  collect
  ;;
esac
