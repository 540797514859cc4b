#!/usr/bin/env bash
# Runs a jssl config on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_pod.sh NAME ZONE CONFIG WORKDIR [extra --config.x=y flags...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/simclr.py:imagenet \
#       gs://my-bucket/simclr_in1k --config.data.data_dir=gs://my-bucket/tfds
#
# Every worker runs the same command; `python -m jssl.main` sees the TPU pod
# environment and calls jax.distributed.initialize() itself, each host feeds
# its share of the global batch (tfds.split_for_jax_process), process 0 writes
# logs, and Orbax writes the checkpoints of all hosts to WORKDIR (use gs://).
# Re-running the same command resumes from the latest checkpoint.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,13p' "$0"; exit 2
fi
NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO=${JSSL_REPO:-https://github.com/jssl-dev/jssl.git}
REF=${JSSL_REF:-main}
EXTRA=$(printf ' %q' "$@")

# 1. Same code and environment on every worker (idempotent).
gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="
  set -e
  [[ -d ~/jssl ]] || git clone -q '$REPO' ~/jssl
  cd ~/jssl && git fetch -q origin && git checkout -q '$REF'
  python3 -m venv ~/jssl-venv && . ~/jssl-venv/bin/activate
  pip install -q -U pip && pip install -q -e '.[tf]' 'jax[tpu]'
"
# 2. Train: one process per host, all at once.
gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all --command="
  cd ~/jssl && . ~/jssl-venv/bin/activate &&
  python -m jssl.main --config='$CONFIG' --workdir='$WORKDIR' $EXTRA
"
