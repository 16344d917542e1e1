#!/usr/bin/env bash
# Train rir-jax on a Cloud TPU VM slice: create it, install, prepare data, train, resume.
#
#   export TPU_NAME=rir ZONE=us-central2-b BUCKET=gs://my-bucket ACCELERATOR=v4-32
#   scripts/tpu_vm.sh create
#   scripts/tpu_vm.sh install
#   scripts/tpu_vm.sh prepare cifar10
#   scripts/tpu_vm.sh train rir1 configs/rir_cifar.py --config.seed=3
#   scripts/tpu_vm.sh resume rir1 configs/rir_cifar.py --config.seed=3   # after a preemption
#   scripts/tpu_vm.sh delete
#
# Never run against Google Cloud: the project's machines have no cloud account (and CI
# machines may not even have gcloud installed). What is tested (tests/test_tpu_script.py)
# is the argument checking and the exact commands, printed by --dry_run or passed to a
# fake $GCLOUD; their flags were checked against `gcloud ... --help` of Cloud SDK 528.
#
# Where things go. install mounts BUCKET with gcsfuse at ~/bucket on every worker, so that
# TFDS, Orbax and TensorBoard see plain paths (launch.py's --workdir is a local path, not a
# gs:// URL) and every worker sees the same files, as Orbax's multi-host saves require:
#   BUCKET/data/                   prepared datasets (--config.data.data_dir)
#   BUCKET/runs/RUN/               config.json, metrics.jsonl, tensorboard/, checkpoints/
#   BUCKET/logs/RUN/WORKER.log     each worker's stdout and stderr
# Watch a run: tensorboard --logdir BUCKET/runs, or
#   gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=0 \
#       --command='tail -f ~/bucket/logs/RUN/*.log'
#
# Preemption. A preempted TPU VM cannot be restarted, only deleted; its disk is lost but
# the bucket is not. `resume` deletes the slice, creates and installs it again, then runs
# the same train command: launch.py restores the newest good checkpoint in BUCKET/runs/RUN
# and continues exactly as if never interrupted.
set -euo pipefail

readonly USAGE="usage: scripts/tpu_vm.sh [--dry_run] COMMAND [ARGS]

commands:
  create                      create the TPU VM slice
  install                     copy this repository (its last commit) to every worker,
                              pip install it with jax[tpu], mount BUCKET at ~/bucket
  prepare DATASET [ARGS...]   python -m rir_jax.data.prepare DATASET into BUCKET/data
  train RUN CONFIG [ARGS...]  launch.py on every worker (--auto_distributed), in the
                              background; CONFIG is configs/NAME.py[:VARIANT], ARGS are
                              --config.key=value overrides; results in BUCKET/runs/RUN
  resume RUN CONFIG [ARGS...] after a preemption: delete, create, install, then train
                              with the same arguments (continues from the last checkpoint)
  delete                      delete the slice (the bucket is kept)

environment:
  TPU_NAME (required)   name of the slice
  ZONE (required)       e.g. us-central2-b
  BUCKET                gs://bucket[/folder] for data, runs and logs (all but create, delete)
  ACCELERATOR           slice type for create (default v4-8; v4-32 has 4 workers)
  TPU_VERSION           TPU VM image (default tpu-ubuntu2204-base)
  SPOT=1                create Spot VMs: cheaper, preemptible
  PROJECT               Google Cloud project (default: gcloud's configured one)
  DRY_RUN=1             print the commands instead of running them (as --dry_run)
  GCLOUD                the gcloud program (default gcloud)"

usage_error() {
  echo "error: $1 (see scripts/tpu_vm.sh --help)" >&2
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

# The remote snippet that mounts BUCKET at ~/bucket, once (a reboot or new VM unmounts it).
mount_bucket() {
  local bucket=${BUCKET#gs://} only_dir=""
  [[ "$bucket" != */* ]] || only_dir="--only-dir=${bucket#*/} "
  echo "mkdir -p ~/bucket && (mountpoint -q ~/bucket || gcsfuse --implicit-dirs" \
    "--rename-dir-limit=1000000 $only_dir${bucket%%/*} ~/bucket)"
}

cmd_create() {
  (($# == 0)) || usage_error "create takes no arguments"
  gcloud_tpu create "$TPU_NAME" --accelerator-type="${ACCELERATOR:-v4-8}" \
    --version="${TPU_VERSION:-tpu-ubuntu2204-base}" $([[ "${SPOT:-0}" == 1 ]] && echo --spot)
}

cmd_install() {
  (($# == 0)) || usage_error "install takes no arguments"
  local repo archive
  repo=$(cd "$(dirname "$0")/.." && pwd)
  archive="${TMPDIR:-/tmp}/rir-jax.tar.gz"
  run git -C "$repo" archive --format=tar.gz --output="$archive" HEAD
  gcloud_tpu scp "$archive" "$TPU_NAME:rir-jax.tar.gz" --worker=all
  # gcsfuse comes from Google's apt repository (the TPU VM images do not ship it).
  local key=/usr/share/keyrings/cloud.google.asc
  on_workers all "set -e
if ! command -v gcsfuse >/dev/null; then
  echo \"deb [signed-by=$key] https://packages.cloud.google.com/apt\" \\
    \"gcsfuse-\$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee $key >/dev/null
  sudo apt-get update -q && sudo apt-get install -yq gcsfuse
fi
$(mount_bucket)
rm -rf ~/rir-jax && mkdir ~/rir-jax && tar -xzf ~/rir-jax.tar.gz -C ~/rir-jax
python3 -m pip install -q -e ~/rir-jax 'jax[tpu]>=0.10.2,<0.11'"
}

cmd_prepare() {
  (($# >= 1)) || usage_error "prepare needs a DATASET (e.g. cifar10)"
  local args
  args=$(printf '%q ' "$@")
  on_workers 0 "set -e; $(mount_bucket)
cd ~/rir-jax && python3 -m rir_jax.data.prepare ${args}--data_dir ~/bucket/data"
}

check_run_args() {
  (($# >= 2)) || usage_error "$COMMAND needs RUN and CONFIG (e.g. rir1 configs/rir_cifar.py)"
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] ||
    usage_error "RUN '$1' must be letters, digits, '.', '_' or '-' (it names a folder)"
  local repo
  repo=$(cd "$(dirname "$0")/.." && pwd)
  [[ "$2" =~ ^configs/[A-Za-z0-9_]+\.py(:[A-Za-z0-9_]+)?$ && -f "$repo/${2%%:*}" ]] ||
    usage_error "CONFIG '$2' must be configs/NAME.py[:VARIANT], a file of this repository"
}

cmd_train() {
  check_run_args "$@"
  local run_name=$1 config=$2 overrides=""
  shift 2
  (($# == 0)) || overrides=$(printf ' %q' "$@")
  # setsid + nohup: the run outlives this ssh session; its output goes to the bucket.
  on_workers all "set -e; $(mount_bucket)
mkdir -p ~/bucket/logs/$run_name
cd ~/rir-jax && setsid nohup python3 launch.py --config=$config \\
    --workdir=\$HOME/bucket/runs/$run_name --config.data.data_dir=\$HOME/bucket/data \\
    --auto_distributed$overrides > ~/bucket/logs/$run_name/\$(hostname).log 2>&1 < /dev/null &"
  [[ "${DRY_RUN:-0}" == 1 ]] ||
    echo "started; logs in $BUCKET/logs/$run_name/, results in $BUCKET/runs/$run_name/"
}

cmd_resume() {
  check_run_args "$@"
  # The preempted slice is gone or unusable: start over from a new one; the data,
  # checkpoints and metrics in the bucket are where the run continues from.
  gcloud_tpu delete "$TPU_NAME" --quiet || true
  cmd_create
  cmd_install
  cmd_train "$@"
}

cmd_delete() {
  (($# == 0)) || usage_error "delete takes no arguments"
  gcloud_tpu delete "$TPU_NAME" --quiet
}

main() {
  if [[ "${1:-}" == --dry_run ]]; then
    DRY_RUN=1
    shift
  fi
  case "${1:-}" in
    -h | --help) echo "$USAGE"; exit 0 ;;
    "") usage_error "no command given" ;;
    create | install | prepare | train | resume | delete) COMMAND=$1 ;;
    *) usage_error "unknown command '$1'" ;;
  esac
  shift
  require_env TPU_NAME ZONE
  if [[ "$COMMAND" =~ ^(install|prepare|train|resume)$ ]]; then
    require_env BUCKET
    [[ "$BUCKET" == gs://?* ]] || usage_error "BUCKET '$BUCKET' must be gs://NAME[/FOLDER]"
  fi
  GCLOUD=${GCLOUD:-gcloud}
  if [[ "${DRY_RUN:-0}" != 1 ]] && ! command -v "$GCLOUD" >/dev/null; then
    usage_error "'$GCLOUD' not found: install the Google Cloud CLI, or use --dry_run"
  fi
  "cmd_$COMMAND" "$@"
}

main "$@"
