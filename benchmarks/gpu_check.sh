#!/usr/bin/env bash
# The GPU checks and benchmarks, in one call of at most ~8 minutes, for a machine with one
# CUDA GPU and a Python that already has torch (figures and logs go to $OUT, default
# ./gpu-check-out). Nothing here is needed without a GPU; the project never needs one.
#
# The machine may lack synthmri's pure-Python dependencies. Where it cannot reach a package
# index, bring them as wheels in .whl/ (ignored by git) and they are installed first, e.g.:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl monai==1.6.0 pydantic pydantic-core \
#     annotated-types typing-inspection
# (pydantic-core is the one binary wheel: match the machine's Python).
#
# Checks, each timed, each allowed to fail without stopping the others:
#   1. the GPU is seen (name, memory, torch version);
#   2. the main job end to end on CUDA (quickstart, tiny) with bf16 autocast and channels_last;
#   3. the diffusion generator on CUDA: pixel space at 64 px with the GPU-sized UNet, a short
#      fit and 50-step DDIM sampling, its seconds per step and images per second;
#   4. the throughput benchmarks on CUDA (plugin loop against a plain PyTorch/MONAI loop).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step NAME TIMEOUT_S COMMAND...: run, time, log to $OUT/NAME.log, never stop
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc, $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}

step gpu 60 $PY -c "
import torch
print(torch.__version__, torch.version.cuda, torch.cuda.is_available())
p = torch.cuda.get_device_properties(0)
print(p.name, round(p.total_memory / 2**30, 1), 'GiB')"

step quickstart 150 $PY -m synthmri --quiet run quickstart --device cuda --out /tmp/gpu-runs \
  --set data.n=96 --set data.size=64 --set generators.0.params.iterations=50 \
  --set experiments.0.models.0.params.epochs=2 --set experiments.0.models.1.params.epochs=2 \
  --set experiments.0.synthetic_per_class=32
cp /tmp/gpu-runs/quickstart-*/metrics.json "$OUT/quickstart-metrics.json" 2>/dev/null

step diffusion 180 $PY - <<'EOF'
import time, torch
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.generators.diffusion import Diffusion

data = make_phantoms(256, 64, seed=0)
model = Diffusion({"unet": "gpu128", "conditional": True, "iterations": 200, "batch_size": 64})
t0 = time.perf_counter(); model.fit(data, RunContext(device="cuda", seed=0))
torch.cuda.synchronize(); fit = time.perf_counter() - t0
t0 = time.perf_counter(); s = model.sample(64, label=1, seed=0)
torch.cuda.synchronize(); samp = time.perf_counter() - t0
print(f"fit 200 steps: {fit:.1f} s ({fit / 200:.3f} s/step, batch 64, 64 px, gpu128)")
print(f"sample 64 images, 50 DDIM steps: {samp:.1f} s ({64 / samp:.1f} images/s)")
print("peak GPU memory", round(torch.cuda.max_memory_allocated() / 2**30, 2), "GiB")
EOF

step dcgan_throughput 90 $PY benchmarks/dcgan_throughput.py --device cuda --size 128 --batch 64
step classifier_throughput 90 $PY benchmarks/classifier_throughput.py --device cuda --size 128
step unet_throughput 60 $PY benchmarks/unet_throughput.py --device cuda --size 128
cat "$OUT/summary.txt"
