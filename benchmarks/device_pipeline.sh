#!/usr/bin/env bash
# The device-side data pipeline measured on one GPU, in one script (about 10 minutes on an H200):
#
#   1. the ceiling (the model's step on a batch kept on the device) against the reference and the
#      tensor pipeline, for fp32 eager (TF32 off), AMP + channels_last and + torch.compile:
#      ResNet-50 at 256x128 (synthetic_gpu) and HRNet-W32 at 384x128 (the paper's size), both
#      with the paper configs' augmentations (official erasing box, official part targets);
#   2. accuracy with either pipeline: the synthetic GPU demo's `bpbreid` trained with each.
#
# Usage: bash benchmarks/device_pipeline.sh [output folder]   (default outputs/device_pipeline)
# STAGES="resnet50 hrnet accuracy" (the default) chooses what runs, e.g. one stage per call.
# SMALL=1 runs a reduced version on any device (a check that the script works, not a figure).
set -euo pipefail

out="${1:-outputs/device_pipeline}"
mkdir -p "$out"
python="${PYTHON:-python}"
device="cuda"
steps=30
demo_steps=1000
stages=" ${STAGES:-resnet50 hrnet accuracy} "
small=""
recipe=(data.erasing=official model.bpbreid.masks.targets=official)
hrnet=(model.backbone=hrnet_w32 data.height=384 data.synthetic.height=384)
if [[ "${SMALL:-0}" == 1 ]]; then
    device="auto"
    steps=2
    demo_steps=4
    hrnet=()
    small=" (SMALL=1: the reduced check, see the line below for what ran)"
fi

"$python" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() \
    if torch.cuda.is_available() else 'no GPU')" | tee "$out/machine.txt"

if [[ "$stages" == *" resnet50 "* ]]; then
    echo "## ResNet-50, 256x128, the paper configs' augmentations$small" \
        | tee "$out/ceiling_resnet50.md"
    "$python" -m bpbreid bench train --ceiling --device "$device" --steps "$steps" \
        -- "${recipe[@]}" | tee -a "$out/ceiling_resnet50.md"
fi

if [[ "$stages" == *" hrnet "* && ${#hrnet[@]} -gt 0 ]]; then
    echo "## HRNet-W32, 384x128, the paper configs' augmentations" \
        | tee "$out/ceiling_hrnet_w32.md"
    "$python" -m bpbreid bench train --ceiling --device "$device" --steps "$steps" \
        --variants fp32 amp_cl -- "${recipe[@]}" "${hrnet[@]}" \
        | tee -a "$out/ceiling_hrnet_w32.md"
fi

[[ "$stages" == *" accuracy "* ]] || exit 0
for pipeline in reference tensor; do
    "$python" -m bpbreid demo --models bpbreid --steps "$demo_steps" --device "$device" \
        --out "$out/demo_$pipeline" --no-figures --no-progress "data.pipeline=$pipeline"
done
"$python" - "$out" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
for pipeline in ("reference", "tensor"):
    results = json.loads((out / f"demo_{pipeline}" / "results.json").read_text())
    for name, sets in results["models"].items():
        scores = ", ".join(f"{s} {v['rank1']:.1f} / {v['mAP']:.1f}" for s, v in sets.items())
        print(f"{pipeline} pipeline, {name} (rank-1 / mAP): {scores}")
EOF
