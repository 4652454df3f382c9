#!/usr/bin/env bash
# A short, real run of the CIFAR example on a CPU (about a minute on 2 cores):
# ResNet-18's topology at width 16 with ZCA whitening (d = 4) after the stem,
# 3 epochs of 30 steps, then the results table and the accuracy curves.
#
# It uses CIFAR-10 from ./data if it is there (or can be downloaded); if not, it
# says so and trains on the generated synthetic data set (--fallback-synthetic).
# --threads 1: on a 2-core machine that is busy with anything else, two OpenMP
# threads wait on each other and a step becomes several times slower.
# --overwrite: running the demo again replaces its previous run in $OUT.
# Extra arguments are passed on to train.py, e.g. ./demo.sh --norm bn
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/demo}

"$PYTHON" examples/zca_resnet_cifar/train.py \
    --dataset cifar10 --fallback-synthetic --synthetic-size 4000 \
    --norm zca --group-size 4 --width 16 \
    --batch-size 64 --lr 0.05 --milestones "" --epochs 3 --max-steps 30 \
    --threads 1 --out-dir "$OUT" --overwrite "$@"
"$PYTHON" examples/zca_resnet_cifar/report.py "$OUT" --plot "$OUT/curves.png"
