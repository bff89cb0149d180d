#!/usr/bin/env bash
# Bundle 1.2's training recipe: the leave-one-dataset-out runs (cross-surface validation) and the runs that ship,
# all started at once, one process each, then waited for. Every run is an ordinary `crack-train` run directory
# (checkpoints, log.csv, history.json; started again, it resumes).
#
#   D=../shared/data RUNS=runs scripts/train-recipe.sh
#
# Settings (environment): D data folder (uav_seg, sut_seg, metu_cls inside), RUNS where the runs go, EPOCHS,
# STEPS (per epoch), BUDGET (minutes per run, optional), DOMAIN (domain-randomised samples per run), WORKERS (batch threads per run),
# SEGMENTERS (model sizes to train, default "fast fast-fine"), CLS_SIZE (classifier input, default 160),
# CRACK_TRAIN (the command, default crack-train), EXTRA (options added to every run, e.g. --prepare-only). On a 2-core machine this is many CPU hours: run it where there
# are cores (and an accelerator: KERAS_BACKEND=jax or torch works, the pipeline is pure numpy).
set -euo pipefail

D=${D:-../shared/data}
RUNS=${RUNS:-runs}
EPOCHS=${EPOCHS:-30}
STEPS=${STEPS:-200}
DOMAIN=${DOMAIN:-6000}
WORKERS=${WORKERS:-2}
SEGMENTERS=${SEGMENTERS:-fast fast-fine}
CLS_SIZE=${CLS_SIZE:-160}
read -r -a TRAIN <<<"${CRACK_TRAIN:-crack-train}"
mkdir -p "$RUNS"

seg_common=(--negatives 400 --synth 300 --domain "$DOMAIN" --crop 128 --batch-size 32 --lr 2e-3
    --steps-per-epoch "$STEPS" --epochs "$EPOCHS" --patience "$EPOCHS" --workers "$WORKERS" ${BUDGET:+--time-budget "$BUDGET"})
cls_common=(--synth 500 --domain "$DOMAIN" --alpha 0.35 --size "$CLS_SIZE" --batch-size 64 --lr 2e-3
    --steps-per-epoch "$STEPS" --epochs "$EPOCHS" --patience "$EPOCHS" --workers "$WORKERS" ${BUDGET:+--time-budget "$BUDGET"})

pids=()
start() { # NAME ARGS...: one run in the background, its output in RUNS/NAME.log
    local name=$1
    shift
    echo "start $name"
    (
        began=$SECONDS
        "${TRAIN[@]}" "$@" --out "$RUNS/$name" ${EXTRA:-} && rc=0 || rc=$?
        echo "$name: exit $rc after $((SECONDS - began)) s"
        exit $rc
    ) >"$RUNS/$name.log" 2>&1 &
    pids+=("$!:$name")
}

for size in $SEGMENTERS; do
    seg=(segmenter --data "$D/uav_seg" "$D/sut_seg" "$D/metu_cls" --model-size "$size" "${seg_common[@]}")
    start "seg_${size//-/_}_loo_sut_seg" "${seg[@]}" --holdout sut_seg
    start "seg_${size//-/_}_loo_uav_seg" "${seg[@]}" --holdout uav_seg
    start "seg_${size//-/_}_all" "${seg[@]}"
done
cls=(classifier --data "$D/metu_cls" "$D/uav_seg" "$D/sut_seg" "${cls_common[@]}")
start cls_loo_sut_seg "${cls[@]}" --holdout sut_seg
start cls_loo_uav_seg "${cls[@]}" --holdout uav_seg
start cls_all "${cls[@]}"

failed=0
for entry in "${pids[@]}"; do
    if wait "${entry%%:*}"; then echo "done ${entry#*:}"; else
        echo "FAILED ${entry#*:} (see $RUNS/${entry#*:}.log)"
        failed=1
    fi
done
exit $failed
