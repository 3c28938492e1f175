#!/usr/bin/env bash
# Regenerate every committed figure that depends on the checkpoint, in order (about 40 min on 2 cores):
# quality -> profile -> scaling fits/plot -> sim-to-real -> model speed benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m model.evaluate --out model/results/quality.json --threads 2
python -m model.profile --out profiles/reference-cpu.json --threads 2
python -m model.scaling profiles/reference-cpu.json --plot docs/scaling.png --json benchmarks/results/scaling.json
python -m envs.live --out docs/sim2real.md --threads 2
python benchmarks/model_speed.py --threads 1 2 --out benchmarks/results/model_speed.json
