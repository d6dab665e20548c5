#!/usr/bin/env bash
# The GPU benchmark in one command, for a machine with one CUDA GPU:
#   1. the seed GPU configuration (64x64, batch 32) for every mode: main table, CG table,
#      scaling (python -m benchmarks.run --preset cuda, one run per section);
#   2. the equal-accuracy sweep at 32x32 and 64x64, batch 32
#      (python -m benchmarks.equal_accuracy);
# everything (JSON, markdown tables, PNG plots, logs, nvidia-smi) under one folder.
# Sized to finish in under 8 minutes on one GPU; each stage has its own time limit so
# that a slow one cannot take the others' time.
#
# Usage: bash benchmarks/gpu.sh [--out DIR] [--cpu-smoke] [--no-install]
#   --out DIR      output folder (default bench-gpu-<date>)
#   --cpu-smoke    tiny sizes on the CPU: checks the script end to end without a GPU
#   --no-install   use the Python environment as it is
#
# Installs only from the project's own files: the package (pip install -e ., no
# dependency resolution when torch is already there). deepinv is used when importable
# (see docs/performance.md for installing it without replacing torch); without it the
# comparison columns are skipped and the reason is written into the JSON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="bench-gpu-$(date -u +%Y%m%d-%H%M%S)"
SMOKE=0
INSTALL=1
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --cpu-smoke) SMOKE=1; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument $1 (expected --out DIR, --cpu-smoke, --no-install)" >&2; exit 2 ;;
    esac
done
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
say() { echo "[gpu.sh $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

# -- environment -------------------------------------------------------------------
if [ "$INSTALL" = 1 ]; then
    if "$PY" -c "import torch" 2>/dev/null; then
        # torch is there (a CUDA build on a GPU machine): do not let pip touch it
        "$PY" -m pip install --quiet --no-deps -e . >>"$LOG" 2>&1 \
            || say "pip install -e . failed (offline?); using src/ on PYTHONPATH"
    else
        "$PY" -m pip install --quiet -e . >>"$LOG" 2>&1 || { say "cannot install torch"; exit 1; }
    fi
fi
export PYTHONPATH="$ROOT/src:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PY' 2>&1 | tee -a "$LOG"
import importlib
for name in ("torch", "numpy", "matplotlib", "tqdm", "unrolled"):
    importlib.import_module(name)
import torch
print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"gpu: {torch.cuda.get_device_name(0)}")
PY
if [ "$SMOKE" = 0 ]; then
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
        || { say "no CUDA device (use --cpu-smoke to check the script on a CPU)"; exit 1; }
    command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi

# -- stages ------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu
    RUN_ARGS=(--quick --sizes 20 --batch 2 --iters 1 --warmup 1 --layers 2 --depth 3
              --features 4 --blur-sigma 1 --cg-extra-gammas --scale-max-iters 3 6
              --scale-max-iter-size 16 --scale-sizes 12 --scale-batches 1 --scale-iters 1
              --no-peak-alloc --quiet)
    EQ_ARGS=(--quick --sizes 20 --batch 2 --rounds 1)
    declare -A SECTION_LIMIT=([main]=300 [cg]=300 [scaling]=300)
    EQ_LIMIT=300
else
    DEVICE=cuda
    RUN_ARGS=(--preset cuda --quiet)
    EQ_ARGS=(--sizes 32 64 --batch 32 --rounds 5)
    # 150 + 60 + 90 + 150 s: under 8 minutes with the installation and the start-up
    declare -A SECTION_LIMIT=([main]=150 [cg]=60 [scaling]=90)
    EQ_LIMIT=150
fi

status=0
# One benchmarks.run per section, each with its own folder and time limit: a section
# that runs long loses only its own results.
for section in main cg scaling; do
    limit="${SECTION_LIMIT[$section]}"
    say "stage 1/$section: python -m benchmarks.run --device $DEVICE ${RUN_ARGS[*]} --sections $section"
    timeout "$limit" "$PY" -m benchmarks.run --device "$DEVICE" "${RUN_ARGS[@]}" \
        --sections "$section" --out "$OUT/run_$section" >"$OUT/run_$section.stdout" 2>>"$LOG" \
        || { say "stage 1/$section failed or ran past ${limit}s"; status=1; }
done
say "stage 2: python -m benchmarks.equal_accuracy --device $DEVICE ${EQ_ARGS[*]}"
timeout "$EQ_LIMIT" "$PY" -m benchmarks.equal_accuracy --device "$DEVICE" "${EQ_ARGS[@]}" \
    --out "$OUT/equal_accuracy" >"$OUT/equal_accuracy.stdout" 2>>"$LOG" \
    || { say "stage 2 failed or ran past ${EQ_LIMIT}s"; status=1; }

# -- one summary -------------------------------------------------------------------
{
    echo "# GPU benchmark ($( [ "$SMOKE" = 1 ] && echo "CPU smoke run" || echo "$DEVICE" ))"
    echo
    echo "Command: bash benchmarks/gpu.sh $( [ "$SMOKE" = 1 ] && echo --cpu-smoke )"
    echo
    for section in main cg scaling; do
        [ -f "$OUT/run_$section/table.md" ] && cat "$OUT/run_$section/table.md" && echo
    done
    echo
    [ -f "$OUT/equal_accuracy/equal_accuracy.md" ] && cat "$OUT/equal_accuracy/equal_accuracy.md"
} >"$OUT/summary.md"
say "wrote $OUT/summary.md; files:"
find "$OUT" -type f | sort | tee -a "$LOG" >&2
exit "$status"
