#!/usr/bin/env bash
# The GPU measurements in one short run (about 5 minutes on an H200), from the repository root:
#
#     bash benchmarks/cuda_profile.sh OUT_DIR [PYTHON]
#
# 1. the machine: nvidia-smi, torch / CUDA / NVML versions, runtime.hardware --host (CPU + GPU description);
# 2. NVML's energy-counter resolution (benchmarks/nvml_resolution.py);
# 3. a smoke run (8 decode steps of every configuration, no meter) that prices a step, to size step 4;
# 4. the full GPU profile (python -m model.profile --device cuda, 192 decode steps per repeat, as many repeats
#    (3-10) as fit about 170 s), NVML energy: OUT_DIR/cuda.json;
# 5. the calibration of profiles/reference-cpu.json onto the GPU (benchmarks/calibration.py --device $dev,
#    60 s budget) scored against step 4's profile: OUT_DIR/calibration_cuda.json and the calibrated profile.
# Each step has its own timeout; a step that fails leaves the earlier ones' files. docs/profiles.md,
# "A GPU profile", records what it gave.
set -u
out=${1:?usage: bash benchmarks/cuda_profile.sh OUT_DIR [PYTHON]}
py=${2:-python3}
dev=${WATTWISE_PROFILE_DEVICE:-cuda}  # cpu runs the same steps on the CPU (to try the script without a GPU)
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
log() { echo "== $(date -u +%H:%M:%S) $*"; }

log machine
nvidia-smi --query-gpu=name,driver_version,power.draw,power.limit,clocks.sm,temperature.gpu --format=csv \
    | tee "$out/nvidia_smi.csv"
$py -c "import torch, numpy, pynvml; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)" \
    | tee "$out/versions.txt"
$py -m runtime.hardware --host --json > "$out/host.json" || log "runtime.hardware --host failed"

log nvml resolution
timeout 30 $py benchmarks/nvml_resolution.py --out "$out/nvml_resolution.json" > /dev/null \
    || log "nvml_resolution failed"

log "smoke: one decode step sweep over every configuration, timed without the meter"
repeats=$(timeout 90 $py -c "
import time, torch, model as M
from model import profile as P
m = M.load_default()
m = P.gpu_model(m) if '$dev' == 'cuda' else m
P.decode_step_ms(m, 2, 1)  # warm
t0 = time.perf_counter()
for c in m.configs():
    m.set_config(c)
    P.decode_step_ms(m, 8, 1)
    P.prefill_ms_per_token(m, 128, 1)
s = (time.perf_counter() - t0) / 8  # s per (decode step + prefill / 8) over all configurations
print(max(3, min(10, int(170 / (1.3 * s * 192)))))") || { log "smoke failed: stopping"; exit 1; }
log "full profile, $repeats repeats"
timeout 280 $py -m model.profile --device $dev --repeats "$repeats" --decode-tokens 192 --out "$out/cuda.json" --force \
    || { log "full profile failed: stopping"; exit 1; }

log calibration onto the GPU
timeout 140 $py benchmarks/calibration.py --device $dev --decode-tokens 192 --budget-s 60 --truth "$out/cuda.json" \
    --out "$out/calibration_cuda.json" --profile-out "$out/calibrated_cuda.json" --force \
    | tee "$out/calibration_cuda.md" || log "calibration failed"
log done
