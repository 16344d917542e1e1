#!/usr/bin/env bash
# Train rir-jax on a Cloud TPU VM slice: create it, install, prepare data, train, resume.
#
#   export TPU_NAME=rir ZONE=us-central2-b BUCKET=gs://my-bucket ACCELERATOR=v4-32
#   rir_jax/tpu_vm.sh create
#   rir_jax/tpu_vm.sh install
#   rir_jax/tpu_vm.sh prepare cifar10 --manual_dir DIR     # DIR on worker 0
#   rir_jax/tpu_vm.sh train rir1 configs/rir_cifar.py --config.seed=3
#   rir_jax/tpu_vm.sh resume rir1 configs/rir_cifar.py --config.seed=3   # after a preemption
#   rir_jax/tpu_vm.sh delete
# or, unattended (Spot slices): create, install and train, and after each preemption
# recreate, reinstall and resume, until the run completes:
#   SPOT=1 rir_jax/tpu_vm.sh run rir1 configs/rir_cifar.py --config.seed=3
#
# Never run against Google Cloud: the project's machines have no cloud account (and CI
# machines may not even have gcloud installed). What is tested (tests/test_tpu_script.py)
# is the argument checking and the exact commands, printed by --dry_run or passed to a
# fake $GCLOUD; each is also parsed by gcloud's own parser (Cloud SDK 528) where installed.
#
# Python. tpu-ubuntu2204-base ships Python 3.10; jax 0.10, flax 0.12 and orbax 0.12 need
# >= 3.11. install puts uv in ~/.local (pip, from PyPI), makes ~/rir-venv with uv's own
# CPython $PYTHON_VERSION, and installs the repository there with its `tpu` extra.
#
# Where things go: straight to the bucket, no gcsfuse (launch.py writes gs:// itself):
#   BUCKET/data/                   prepared datasets (--config.data.data_dir)
#   BUCKET/runs/RUN/               config.json, metrics.jsonl, tensorboard/, checkpoints/
#   BUCKET/logs/RUN/WORKER.log     each worker's output, copied there every minute
# Watch a run: its metrics.jsonl and TensorBoard events in BUCKET/runs/RUN, its workers'
# output in BUCKET/logs/RUN.
#
# Preemption. A preempted TPU VM cannot be restarted, only deleted; its disk is lost but
# the bucket is not. `resume` deletes the slice, creates and installs it again, then runs
# the same train command: launch.py restores the newest good checkpoint in BUCKET/runs/RUN
# and continues exactly as if never interrupted. `run` does that by itself: it trains in
# the foreground and, whenever the training command ends without success, asks for the
# slice's state; a slice that is not READY any more (or a queued resource not ACTIVE) is
# deleted and made again. It stops on success, on launch.py's own failures (exit 1 or 2
# on a READY slice: a retry would fail the same way) and after MAX_ATTEMPTS tries.
set -euo pipefail

readonly USAGE="usage: rir_jax/tpu_vm.sh [--dry_run] COMMAND [ARGS]

commands:
  create                      create the TPU VM slice (QUEUED=1: as a queued resource,
                              waiting until it is ACTIVE)
  install                     copy this repository (its last commit) to every worker,
                              make ~/rir-venv (uv, Python PYTHON_VERSION), install it there
                              with its tpu extra
  prepare DATASET [ARGS...]   python -m rir_jax.data.prepare DATASET into BUCKET/data
  train RUN CONFIG [ARGS...]  launch.py on every worker (--auto_distributed), in the
                              background; CONFIG is configs/NAME.py[:a=1,b], ARGS are
                              --config.key=value overrides; results in BUCKET/runs/RUN
  resume RUN CONFIG [ARGS...] after a preemption: delete, create, install, then train
                              with the same arguments (continues from the last checkpoint)
  run RUN CONFIG [ARGS...]    unattended: train in the foreground; recreate the slice and
                              resume after each preemption, until the run completes
  delete                      delete the slice (the bucket is kept)

environment:
  TPU_NAME (required)   name of the slice (and of its queued resource)
  ZONE (required)       e.g. us-central2-b
  BUCKET                gs://bucket[/folder] for data, runs and logs (all but create, delete)
  ACCELERATOR           slice type (default v4-8; v4-32 has 4 workers): v4-N, v5litepod-N
                        (v5e), v5p-N, v6e-N
  TPU_VERSION           runtime image (default by generation: v4 tpu-ubuntu2204-base,
                        v5e v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
  PYTHON_VERSION        Python of the workers' venv (default 3.11; >= 3.11)
  SPOT=1                create Spot VMs: cheaper, preemptible
  QUEUED=1              create through a queued resource (waits for capacity)
  MAX_ATTEMPTS          run: how many times to (re)start training (default 20)
  POLL_SECONDS          create with QUEUED=1, run: seconds between checks (default 60)
  PROJECT               Google Cloud project (default: gcloud's configured one)
  DRY_RUN=1             print the commands instead of running them (as --dry_run)
  GCLOUD                the gcloud program (default gcloud)"

readonly VENV='~/rir-venv'

usage_error() {
  echo "error: $1 (see rir_jax/tpu_vm.sh --help)" >&2
  exit 2
}

# Prints a command, shell-quoted so it can be pasted; runs it unless this is a dry run.
run() {
  printf '%q ' "$@" | sed 's/ $//'
  echo
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    "$@"
  fi
}

gcloud_tpu() {
  local verb=$1
  shift
  run "$GCLOUD" compute tpus tpu-vm "$verb" "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

gcloud_queued() {
  local verb=$1
  shift
  run "$GCLOUD" compute tpus queued-resources "$verb" "$@" --zone="$ZONE" \
    ${PROJECT:+--project="$PROJECT"}
}

# Runs a shell command on the given workers (all, or one index).
on_workers() {
  gcloud_tpu ssh "$TPU_NAME" --worker="$1" --command="$2"
}

require_env() {
  local name
  for name in "$@"; do
    [[ -n "${!name:-}" ]] || usage_error "set $name in the environment"
  done
}

# The runtime image: TPU_VERSION, else the one Google documents for JAX on the generation.
runtime_version() {
  if [[ -n "${TPU_VERSION:-}" ]]; then
    echo "$TPU_VERSION"
    return
  fi
  case "${ACCELERATOR:-v4-8}" in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) usage_error "no default image for ACCELERATOR '${ACCELERATOR}': set TPU_VERSION" ;;
  esac
}

cmd_create() {
  (($# == 0)) || usage_error "create takes no arguments"
  local spot=()
  [[ "${SPOT:-0}" != 1 ]] || spot=(--spot)
  if [[ "${QUEUED:-0}" != 1 ]]; then
    gcloud_tpu create "$TPU_NAME" --accelerator-type="${ACCELERATOR:-v4-8}" \
      --version="$(runtime_version)" "${spot[@]}"
    return
  fi
  gcloud_queued create "$TPU_NAME" --node-id="$TPU_NAME" \
    --accelerator-type="${ACCELERATOR:-v4-8}" --runtime-version="$(runtime_version)" "${spot[@]}"
  [[ "${DRY_RUN:-0}" != 1 ]] || return 0
  local state
  while state=$(queued_state) && [[ "$state" != ACTIVE ]]; do
    case "$state" in
      FAILED | SUSPENDED) echo "error: queued resource $TPU_NAME is $state" >&2; exit 1 ;;
    esac
    sleep "${POLL_SECONDS:-60}"
  done
}

# Asks gcloud for a state; prints nothing if that fails (no such slice). A dry run shows
# the question on stderr and assumes the healthy answer, $1.
ask_state() {
  local healthy=$1
  shift
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$GCLOUD" "$@" | sed 's/ $//' >&2
    echo >&2
    echo "$healthy"
    return
  fi
  "$GCLOUD" "$@" 2>/dev/null | tail -n 1 || true
}

# The queued resource's state (ACTIVE once its slice is up), empty if there is none.
queued_state() {
  ask_state ACTIVE compute tpus queued-resources describe "$TPU_NAME" \
    --format='value(state.state)' --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

# READY when the slice can train; anything else (PREEMPTED, missing: empty) means remake it.
slice_state() {
  if [[ "${QUEUED:-0}" == 1 ]]; then
    local state
    state=$(queued_state)
    [[ "$state" != ACTIVE ]] || state=READY
    echo "$state"  # else SUSPENDED (preempted), FAILED, ... or empty: none
    return
  fi
  ask_state READY compute tpus tpu-vm describe "$TPU_NAME" --format='value(state)' \
    --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

cmd_install() {
  (($# == 0)) || usage_error "install takes no arguments"
  local repo archive
  repo=$(cd "$(dirname "$0")/.." && pwd)
  archive="${TMPDIR:-/tmp}/rir-jax.tar.gz"
  run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
  gcloud_tpu scp "$archive" "$TPU_NAME:rir-jax.tar.gz" --worker=all
  # uv fetches its own CPython build: the image's python3 (3.10) is too old for jax 0.10.
  on_workers all "set -e
rm -rf ~/rir-jax && mkdir ~/rir-jax && tar -xzf ~/rir-jax.tar.gz -C ~/rir-jax
python3 -m pip install -q --user 'uv>=0.4'
~/.local/bin/uv venv -q --allow-existing --python ${PYTHON_VERSION:-3.11} $VENV
~/.local/bin/uv pip install -q --python $VENV/bin/python -e ~/rir-jax'[tpu]'"
}

cmd_prepare() {
  (($# >= 1)) || usage_error "prepare needs a DATASET (e.g. cifar10)"
  local args
  args=$(printf '%q ' "$@")
  on_workers 0 "cd ~/rir-jax &&
$VENV/bin/python -m rir_jax.data.prepare ${args}--data_dir $BUCKET/data"
}

check_run_args() {
  (($# >= 2)) || usage_error "$COMMAND needs RUN and CONFIG (e.g. rir1 configs/rir_cifar.py)"
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
    usage_error "RUN '$1' must be letters, digits, '.', '_' or '-' (it names a folder)"
  local repo
  repo=$(cd "$(dirname "$0")/.." && pwd)
  [[ "$2" =~ ^configs/[A-Za-z0-9_]+\.py(:[A-Za-z0-9_=,.]+)?$ && -f "$repo/${2%%:*}" ]] ||
    usage_error "CONFIG '$2' must be configs/NAME.py[:a=1,b], a file of this repository"
}

# What every worker runs: launch.py, its output copied to the bucket every minute and at
# the end, and launch.py's exit code as the command's.
worker_command() {
  local run_name=$1 config=$2 overrides=""
  shift 2
  (($# == 0)) || overrides=$(printf ' %q' "$@")
  local log="~/rir-logs/$run_name.log" dest="$BUCKET/logs/$run_name/\$(hostname).log"
  echo "mkdir -p ~/rir-logs && cd ~/rir-jax
$VENV/bin/python launch.py --config=$config --workdir=$BUCKET/runs/$run_name \\
    --config.data.data_dir=$BUCKET/data --auto_distributed$overrides > $log 2>&1 < /dev/null &
pid=\$!
(while sleep 60; do gcloud storage cp -q $log $dest; done) > /dev/null 2>&1 &
copier=\$!
wait \$pid && code=0 || code=\$?
kill \$copier; gcloud storage cp -q $log $dest; exit \$code"
}

cmd_train() {
  check_run_args "$@"
  # setsid + nohup: the run outlives this ssh session.
  on_workers all "setsid nohup bash -c $(printf '%q' "$(worker_command "$@")") \\
    > /dev/null 2>&1 < /dev/null &"
  [[ "${DRY_RUN:-0}" == 1 ]] ||
    echo "started; logs in $BUCKET/logs/$1/, results in $BUCKET/runs/$1/"
}

cmd_resume() {
  check_run_args "$@"
  # The preempted slice is gone or unusable: start over from a new one; the data,
  # checkpoints and metrics in the bucket are where the run continues from.
  delete_slice || true
  cmd_create
  cmd_install
  cmd_train "$@"
}

cmd_run() {
  check_run_args "$@"
  local attempt state code
  for ((attempt = 1; attempt <= ${MAX_ATTEMPTS:-20}; attempt++)); do
    state=$(slice_state)
    if [[ "$state" != READY ]]; then
      echo "attempt $attempt: slice ${TPU_NAME} is ${state:-missing}: (re)creating it"
      [[ -z "$state" ]] || delete_slice || true
      cmd_create
    fi
    # A new slice needs it; an existing one gets this repository's HEAD, as `train` uses.
    if [[ "$state" != READY ]] || ((attempt == 1)); then
      cmd_install
    fi
    on_workers all "$(worker_command "$@")" && code=0 || code=$?
    if ((code == 0)); then
      echo "run $1 completed; results in $BUCKET/runs/$1/"
      return 0
    fi
    if [[ "$(slice_state)" == READY ]] && ((code == 1 || code == 2)); then
      echo "error: launch.py failed (exit $code) on a healthy slice; see $BUCKET/logs/$1/" >&2
      exit 1
    fi
    sleep "${POLL_SECONDS:-60}"
  done
  echo "error: run $1 not completed after ${MAX_ATTEMPTS:-20} attempts" >&2
  exit 1
}

delete_slice() {
  if [[ "${QUEUED:-0}" == 1 ]]; then
    gcloud_queued delete "$TPU_NAME" --force --quiet  # --force: its slice too
  else
    gcloud_tpu delete "$TPU_NAME" --quiet
  fi
}

cmd_delete() {
  (($# == 0)) || usage_error "delete takes no arguments"
  delete_slice
}

main() {
  if [[ "${1:-}" == --dry_run ]]; then
    DRY_RUN=1
    shift
  fi
  case "${1:-}" in
    -h | --help) echo "$USAGE"; exit 0 ;;
    "") usage_error "no command given" ;;
    create | install | prepare | train | resume | run | delete) COMMAND=$1 ;;
    *) usage_error "unknown command '$1'" ;;
  esac
  shift
  require_env TPU_NAME ZONE
  if [[ "$COMMAND" =~ ^(install|prepare|train|resume|run)$ ]]; then
    require_env BUCKET
    [[ "$BUCKET" == gs://?* ]] || usage_error "BUCKET '$BUCKET' must be gs://NAME[/FOLDER]"
    BUCKET=${BUCKET%/}
  fi
  if [[ "$COMMAND" =~ ^(create|resume|run)$ ]]; then
    runtime_version > /dev/null  # an unknown ACCELERATOR without TPU_VERSION: exit 2 now
  fi
  [[ "${PYTHON_VERSION:-3.11}" =~ ^3\.(1[1-9]|[2-9][0-9])(\.[0-9]+)?$ ]] ||
    usage_error "PYTHON_VERSION '$PYTHON_VERSION' must be 3.11 or newer (jax 0.10 needs it)"
  GCLOUD=${GCLOUD:-gcloud}
  if [[ "${DRY_RUN:-0}" != 1 ]] && ! command -v "$GCLOUD" >/dev/null; then
    usage_error "'$GCLOUD' not found: install the Google Cloud CLI, or use --dry_run"
  fi
  "cmd_$COMMAND" "$@"
}

main "$@"
