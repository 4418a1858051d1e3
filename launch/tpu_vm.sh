#!/usr/bin/env bash
# Runs the jaxml launcher on every worker of a Cloud TPU VM slice, all at once.
#
#   launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [extra launcher flags...]
#
# e.g.
#   JAXML_SETUP=1 launch/tpu_vm.sh my-v4-32 us-central2-b \
#       experiments/classifier.py:cifar10 /mnt/shared/runs/c10 --config.seed=1
#
# Every worker runs `python -m launch.main --config CONFIG --workdir WORKDIR --multihost ...`;
# `--multihost` makes the launcher call jax.distributed.initialize(), which finds the other
# workers of the slice by itself. Each worker reads only its slice of every global batch and
# only worker 0 writes metrics and artifacts, but every worker writes its shards of each
# checkpoint, so WORKDIR must be storage that all workers share and see at the same path.
# jaxml writes the workdir with ordinary file I/O, so a gs:// URL is refused here: mount the
# bucket on every worker (gcsfuse) or use a Filestore/NFS share, and pass that mount path.
# CONFIG is a path relative to the checkout on the workers. Run the same command again to
# resume from the newest checkpoint. A relative WORKDIR resolves inside JAXML_DIR on each
# worker, which is only right for a single-worker slice.
#
# Environment (all optional):
#   JAXML_SETUP=1      first, on every worker: clone JAXML_REPO_URL into JAXML_DIR if absent,
#                      fetch JAXML_REF and check it out (detached), `pip install -e '.[tpu]'`.
#   JAXML_REPO_URL     git URL to clone (default: the `origin` remote of this checkout).
#   JAXML_REF          branch or tag to check out (default: the remote's default branch).
#   JAXML_DIR          checkout on the workers; relative paths are under the worker's home
#                      directory (default: jaxml).
#   JAXML_PYTHON       interpreter on the workers (default: python3).
#   JAX_COMPILATION_CACHE_DIR, XLA_FLAGS, LIBTPU_INIT_ARGS: passed on to the workers if set.
#
# Output of all workers is interleaved on this terminal; only worker 0 prints the final scores.
# The remote command runs in the workers' login shell (bash on the standard TPU VM images).
# Only one process at a time can hold a worker's TPU: if a run fails with "TPU in use", an
# earlier run (e.g. one whose ssh session was cut) is still alive on some worker.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [extra launcher flags...]
  e.g. launch/tpu_vm.sh my-v4-32 us-central2-b experiments/classifier.py:cifar10 /mnt/runs/c10
  WORKDIR must be a path every worker shares (NFS/Filestore, or a bucket mounted with gcsfuse).
  Set JAXML_SETUP=1 to clone/update the repo and pip install -e '.[tpu]' on every worker first;
  see the comments at the top of this script for the other environment variables.
EOF
  exit 2
}

if [[ $# -lt 4 ]]; then
  usage
fi
TPU_NAME=$1
ZONE=$2
CONFIG=$3
WORKDIR=$4
shift 4
for arg in "$TPU_NAME" "$ZONE" "$CONFIG" "$WORKDIR"; do
  if [[ -z $arg || $arg == -* ]]; then
    usage
  fi
done
if [[ $WORKDIR == *://* ]]; then
  # runner.prepare_workdir and the metric writer use os.path/open(); remove this check once
  # they accept URLs.
  echo "error: WORKDIR $WORKDIR is a URL; mount the bucket (e.g. gcsfuse) on every worker" \
    "and pass the mount path" >&2
  exit 2
fi

JAXML_SETUP=${JAXML_SETUP:-0}
JAXML_DIR=${JAXML_DIR:-jaxml}
JAXML_PYTHON=${JAXML_PYTHON:-python3}
if [[ $JAXML_SETUP == 1 ]]; then
  if [[ -z ${JAXML_REPO_URL:-} ]]; then
    JAXML_REPO_URL=$(git -C "$(dirname "$0")/.." remote get-url origin 2>/dev/null || true)
  fi
  if [[ -z ${JAXML_REPO_URL:-} ]]; then
    echo "error: JAXML_SETUP=1 needs JAXML_REPO_URL (this checkout has no origin remote)" >&2
    exit 2
  fi
fi

q() { printf '%q' "$1"; }

remote="set -euo pipefail"
for var in JAX_COMPILATION_CACHE_DIR XLA_FLAGS LIBTPU_INIT_ARGS; do
  if [[ -n ${!var:-} ]]; then
    remote+="; export $var=$(q "${!var}")"
  fi
done
if [[ $JAXML_SETUP == 1 ]]; then
  dir=$(q "$JAXML_DIR")
  remote+="; if [[ ! -d $dir/.git ]]; then git clone --quiet $(q "$JAXML_REPO_URL") $dir; fi"
  # Detached at the fetched commit: works for branches, tags and the default branch alike.
  remote+="; git -C $dir fetch --quiet origin $(q "${JAXML_REF:-HEAD}")"
  remote+="; git -C $dir checkout --quiet --detach FETCH_HEAD"
  remote+="; cd $dir && $(q "$JAXML_PYTHON") -m pip install --quiet -e '.[tpu]'"
else
  remote+="; cd $(q "$JAXML_DIR")"
fi
remote+="; exec $(q "$JAXML_PYTHON") -m launch.main --config $(q "$CONFIG")"
remote+=" --workdir $(q "$WORKDIR") --multihost"
for arg in "$@"; do
  remote+=" $(q "$arg")"
done

exec gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all \
  --command "$remote"
