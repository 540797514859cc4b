#!/usr/bin/env bash
# Runs a jssl config on every worker of a Cloud TPU VM pod slice, one process per host.
#
# usage: launch/tpu_pod.sh NAME ZONE CONFIG WORKDIR [jssl flags...]
#   e.g. launch/tpu_pod.sh my-v4-32 us-central2-b configs/simclr.py:imagenet \
#          gs://my-bucket/simclr_in1k --config.data.data_dir=gs://my-bucket/tfds
#
# environment:
#   JSSL_SETUP=copy   (default) pack this checkout (tracked and untracked, not
#                     ignored files), copy it to every worker with
#                     `gcloud compute tpus tpu-vm scp`, unpack it into
#                     JSSL_REMOTE_DIR and pip-install it with jax[tpu] into
#                     JSSL_REMOTE_VENV (idempotent: re-running updates in place)
#   JSSL_SETUP=skip   the workers already hold jssl in JSSL_REMOTE_VENV
#   JSSL_REMOTE_DIR   checkout on each worker   (default: jssl, in the worker's home)
#   JSSL_REMOTE_VENV  virtualenv on each worker (default: jssl-venv, in the worker's home)
#   JSSL_PIP_EXTRAS   what setup installs next to jssl (default: 'jax[tpu]')
#
# Every worker runs `python -m jssl.main ... --distributed=on`: JAX finds the
# slice's workers in the TPU VM metadata and forms one job (jssl fails loudly
# instead of training N separate copies when it cannot). WORKDIR must be
# visible to all workers (gs://). Re-running the same command resumes.
set -euo pipefail
usage() { sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
if [[ $# -lt 4 || -z "$1" || -z "$2" || -z "$3" || -z "$4" ]]; then
  usage
fi
NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
SETUP=${JSSL_SETUP:-copy}
REMOTE_DIR=${JSSL_REMOTE_DIR:-jssl}
REMOTE_VENV=${JSSL_REMOTE_VENV:-jssl-venv}
PIP_EXTRAS=${JSSL_PIP_EXTRAS:-jax[tpu]}
case $SETUP in copy|skip) ;; *) echo "JSSL_SETUP=$SETUP: expected copy or skip" >&2; usage;; esac

# Runs one command line on all workers. The remote login shell parses it once,
# so every word is %q-quoted here: values with spaces or quotes arrive intact,
# and no empty word is made when there are no extra flags.
on_all_workers() {
  gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="$1"
}
q() { printf '%q' "$1"; }

# 1. Same code and environment on every worker.
if [[ $SETUP == copy ]]; then
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  src=$REMOTE_DIR; [[ $src == /* ]] || src=./$src  # pip: a path, not a package name
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  (cd "$root" && git ls-files -z --cached --others --exclude-standard \
     | tar --null -T - -czf "$tmp/jssl.tar.gz")
  gcloud compute tpus tpu-vm scp "$tmp/jssl.tar.gz" "$NAME:jssl.tar.gz" \
    --zone="$ZONE" --worker=all
  on_all_workers "set -e; mkdir -p $(q "$REMOTE_DIR"); tar -xzf jssl.tar.gz -C $(q "$REMOTE_DIR");
    [[ -d $(q "$REMOTE_VENV") ]] || python3 -m venv $(q "$REMOTE_VENV");
    . $(q "$REMOTE_VENV")/bin/activate;
    pip install -q -U pip; pip install -q -e $(q "$src[tf]") $(q "$PIP_EXTRAS")"
fi

# 2. Train: one process per host, all at once.
train=(python -m jssl.main --config="$CONFIG" --workdir="$WORKDIR" --distributed=on "$@")
on_all_workers ". $(q "$REMOTE_VENV")/bin/activate && cd $(q "$REMOTE_DIR") &&
  $(printf '%q ' "${train[@]}")"
