#!/usr/bin/env bash
# The GPU checks and benchmarks, in one call of at most ~8 minutes, for a machine with one
# CUDA GPU and a Python that already has torch (figures and logs go to $OUT, default
# ./gpu-check-out). Nothing here is needed without a GPU; the project never needs one.
#
# The machine may lack synthmri's pure-Python dependencies. Where it cannot reach a package
# index, bring them as wheels in .whl/ (ignored by git) and they are installed first, e.g.:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl monai==1.6.1 pydantic pydantic-core \
#     annotated-types typing-inspection typing_extensions typer click
# (pydantic-core is the one binary wheel: match the machine's Python; the last three only
# where the machine's are older than synthmri's).
#
# Checks, most telling first, each timed, each allowed to fail without stopping the others,
# none started past the deadline (DEADLINE_S, default 500 s):
#   1. the GPU is seen (name, memory, torch version);
#   2. the main job end to end on CUDA (quickstart, tiny) with bf16 autocast and channels_last;
#   3. issue 19: diffusion_anomaly in pixel space (AnoDDPM's form; too slow on a CPU) on the
#      vae-anomaly recipe's phantoms, 1500 steps, the noise level chosen on validation;
#   4. issue 14: fastgan's seconds per step at the paper's widths (batch 8, 64 px) and at the
#      CPU recipe's against a plain PyTorch loop of the same networks (is the GPU loop
#      host-bound by the plugin or by the networks' many small kernels?), then the fastgan
#      recipe at the paper's widths on 1000 phantoms with as many steps as fit FASTGAN_S
#      seconds per class (default 40: an end-to-end CUDA run, far too short for quality; at
#      ~80 ms a step, the paper's 10000+ steps need FASTGAN_S=800 and a lease of their own);
#   5. the diffusion generator: pixel space at 64 px with the GPU-sized UNet, a short fit and
#      50-step DDIM sampling, its seconds per step and images per second (and the steps that
#      fit DIFFUSION_S seconds, for step 7);
#   6. the throughput benchmarks on CUDA (plugin loop against a plain PyTorch/MONAI loop);
#   7. issue 14: the diffusion generator in pixel space at its GPU size, trained on a GPU on
#      the scarcity recipe's train part for as many steps as fit DIFFUSION_S seconds (default
#      240); the run samples 800 images per class through the memorisation guard and they
#      come back in $OUT/diffusion-samples.tar.gz, to be scored on a CPU by the scarcity
#      recipe with a `folder` generator (docs/results.md, scarcity). The phantoms are read
#      from .gpu/phantoms (`synthmri phantoms --n 1000 --size 64 --out .gpu/phantoms`,
#      carried), so that real and synthetic images pass the same loader. The noise schedule
#      is gan-zoo's (cosine, v, lr 5e-4, EMA 0.995): the plugin's defaults (linear, epsilon,
#      lr 2e-4) left the samples noisy after 1700 steps, cosine / v gave clean heads after
#      1500 (validation TSTR 0.667 and 0.707; docs/results.md).
#      800 samples per class (the first run's 400 left a class filter that keeps 43 % of
#      the normal class 163 distinct images for 300 places, some shown twice).
#      Then the same weights sample 400 per class at each scale of DIFFUSION_GUIDANCE
#      (default "1 1.5 2"; `synthmri generate`, no guard): guidance 2 put lesions on
#      normal-class samples, and at 32 px on a CPU validation TSTR chose 1, the run's scale
#      now (docs/results.md); the sets check that choice at this size.
#      They come back in $OUT/diffusion-guidance.tar.gz (g<scale>/<class>/).
#      DIFFUSION_ITERS skips the timing; DIFFUSION_EXTRA (", key: value, ...") adds params.
# CHECKS (default: all) names the steps to run. Steps 1-6 fill the deadline on their own, so
# step 7 runs in a call of its own: CHECKS="gpu diffusion diffusion_tstr diffusion_guidance"
# DEADLINE_S=540 DIFFUSION_S=180 (the guidance sets take about 40 s per scale).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEADLINE_S=${DEADLINE_S:-500}
FASTGAN_S=${FASTGAN_S:-40}
DIFFUSION_S=${DIFFUSION_S:-240}
CHECKS=${CHECKS:-all}
LOGS=$(mktemp -d)  # one log per step; $OUT gets them all in checks.log
if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

step() {  # step NAME LIMIT_S COMMAND...: run, time, log to $OUT/checks.log, never stop
  local name=$1 limit=$2
  shift 2
  [[ $CHECKS == all || " $CHECKS " == *" $name "* ]] || return 0
  local left=$((DEADLINE_S - SECONDS))
  if ((left < 20)); then
    echo "$name: skipped, deadline" | tee -a "$OUT/summary.txt"
    return
  fi
  ((limit > left)) && limit=$left
  local t0=$SECONDS
  timeout "$limit" "$@" >"$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc, $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/summary.txt"
  { echo "=== $name (exit $rc)"; cat "$LOGS/$name.log"; } >>"$OUT/checks.log"
}

step gpu 60 $PY -c "
import torch, synthmri, monai, pydantic
print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), monai.__version__)
p = torch.cuda.get_device_properties(0)
print(p.name, round(p.total_memory / 2**30, 1), 'GiB')"

step quickstart 75 $PY -m synthmri --quiet run quickstart --device cuda --out /tmp/gpu-runs \
  --set data.n=96 --set data.size=64 --set generators.0.params.iterations=50 \
  --set experiments.0.models.0.params.epochs=2 --set experiments.0.models.1.params.epochs=2 \
  --set experiments.0.synthetic_per_class=32
cp /tmp/gpu-runs/quickstart-*/metrics.json "$OUT/quickstart-metrics.json" 2>/dev/null

# the recipe's split at its former 600 phantoms: comparable with docs/results.md, within 200 s
step anomaly_diffusion 200 $PY benchmarks/anomaly_methods.py --study --device cuda \
  --set data.n=600 --variants default --model diffusion_anomaly --param latent=false \
  --param iterations=1500 --noise-levels 0.3 0.4 --anomaly-thresholds 98

# fastgan: steps for FASTGAN_S seconds per class, from a timed fit at the paper's widths
step fastgan_speed 60 $PY - "$FASTGAN_S" <<'EOF'
import sys, time, torch
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.generators.fastgan import FastGAN

data = make_phantoms(500, 64, seed=0)
ctx = RunContext(device="cuda", seed=0)
FastGAN({"iterations": 10, "batch_size": 8}).fit(data, ctx)  # warm-up
torch.cuda.synchronize(); t0 = time.perf_counter()
FastGAN({"iterations": 60, "batch_size": 8}).fit(data, ctx)
torch.cuda.synchronize(); per = (time.perf_counter() - t0) / 60
print(f"fastgan 64 px, paper widths, batch 8: {per * 1000:.1f} ms/step")
print("iterations", max(500, min(20000, int(float(sys.argv[1]) / per) // 100 * 100)))
EOF
step fastgan_vs_plain 60 $PY benchmarks/generator_training.py --device cuda \
  --generators fastgan-cpu fastgan-plain --size 64 --batch 16 --iters 100
ITERS=$(awk '/^iterations/ {print $2}' "$LOGS/fastgan_speed.log" 2>/dev/null)
step fastgan 240 $PY -m synthmri --quiet run fastgan --device cuda --out /tmp/gpu-runs \
  --set data.n=1000 \
  --set "generators.0.params={iterations: ${ITERS:-2000}, batch_size: 8, lr: 2.0e-4}" \
  --set 'evaluate=[classification, image_quality, privacy]'
cp /tmp/gpu-runs/fastgan-*/metrics.json "$OUT/fastgan-metrics.json" 2>/dev/null
cp /tmp/gpu-runs/fastgan-*/figures/generate-fastgan-samples.png "$OUT/" 2>/dev/null

step diffusion 75 $PY - "$DIFFUSION_S" <<'EOF'
import sys, time, torch
from synthmri.core.phantoms import make_phantoms
from synthmri.core.training import RunContext
from synthmri.plugins.generators.diffusion import Diffusion

data = make_phantoms(256, 64, seed=0)
ctx = RunContext(device="cuda", seed=0)
params = {"unet": "gpu128", "conditional": True, "emits_masks": True, "batch_size": 64}
Diffusion({**params, "iterations": 10}).fit(data, ctx)  # warm-up
model = Diffusion({**params, "iterations": 60})
torch.cuda.synchronize(); t0 = time.perf_counter()
model.fit(data, ctx)
torch.cuda.synchronize(); per = (time.perf_counter() - t0) / 60
t0 = time.perf_counter(); model.sample(64, label=1, seed=0)
torch.cuda.synchronize(); samp = time.perf_counter() - t0
print(f"fit: {per * 1000:.1f} ms/step (batch 64, 64 px, gpu128, masks, after 10 warm-up steps)")
print(f"sample 64 images, 50 DDIM steps, guidance: {samp:.1f} s ({64 / samp:.1f} images/s)")
print("peak GPU memory", round(torch.cuda.max_memory_allocated() / 2**30, 2), "GiB")
print("iterations", max(500, min(50000, int(float(sys.argv[1]) / per) // 100 * 100)))
EOF

step dcgan_throughput 45 $PY benchmarks/dcgan_throughput.py --device cuda --size 128 --batch 64
step classifier_throughput 45 $PY benchmarks/classifier_throughput.py --device cuda --size 128
step unet_throughput 40 $PY benchmarks/unet_throughput.py --device cuda --size 128
# the diffusion generator at its GPU size on the scarcity recipe's phantoms (step 7)
ITERS=${DIFFUSION_ITERS:-$(awk '/^iterations/ {print $2}' "$LOGS/diffusion.log" 2>/dev/null)}
step diffusion_tstr $((DIFFUSION_S + 180)) $PY -m synthmri --quiet run scarcity --device cuda \
  --out /tmp/gpu-runs --set data.path=.gpu/phantoms \
  --set "generators=[{plugin: diffusion, per_class: false, memorisation: {action: reject,
    quantile: 0.05}, params: {conditional: true, emits_masks: true, unet: gpu128,
    iterations: ${ITERS:-1000}, batch_size: 64, guidance: 1.0, sample_steps: 50, schedule: cosine,
    prediction: v, lr: 5.0e-4, ema: 0.995${DIFFUSION_EXTRA:-}}}]" \
  --set 'experiments.0.train_on=[synthetic]' --set 'experiments.0.real_fraction=[1.0]' \
  --set 'experiments.0.seeds=[0]' --set experiments.0.synthetic_per_class=800 \
  --set 'evaluate=[classification]'
for d in /tmp/gpu-runs/scarcity-*/; do
  [[ -d $d ]] || continue
  tar -czf "$OUT/diffusion-samples.tar.gz" -C "$d" synthetic
  cp "$d/metrics.json" "$OUT/diffusion-metrics.json"
  cp "$d/figures/generate-diffusion-samples.png" "$OUT/" 2>/dev/null
  # the same weights at other guidance scales (a sampling param), without the guard
  for g in ${DIFFUSION_GUIDANCE:-1 1.5 2}; do
    step diffusion_guidance 60 $PY -m synthmri --quiet generate --device cuda -n 400 \
      "$d/checkpoints/generate-diffusion.pt" --set "guidance=$g" --out "/tmp/gpu-guidance/g$g"
  done
  tar -czf "$OUT/diffusion-guidance.tar.gz" -C /tmp/gpu-guidance . 2>/dev/null
done

cat "$OUT/summary.txt"
