#!/usr/bin/env bash
# Create the separate environment that benchmarks/train_vs_openclip.py runs open_clip in.
#
# open_clip pulls torchvision and timm, which must never be resolved into the main .venv
# (they would replace its CPU torch 2.13.0 with a multi-GB CUDA build). So open_clip lives
# in its own venv, pinned to the versions the comparison names:
#     torch==2.14.1 torchvision==0.29.1 open_clip_torch
#
# Only the CUDA build of torch 2.14.1 exists for this platform (~555 MB wheel plus ~2.2 GB
# of nvidia-* wheels it depends on); it runs on CPU all the same, just with a big install.
#
#     bash benchmarks/openclip_env.sh            # creates .venv-openclip next to .venv
#     OPENCLIP_VENV=/some/dir bash benchmarks/openclip_env.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPENCLIP_VENV:-$ROOT/.venv-openclip}"
PYTHON="${PYTHON:-python3}"
PACKAGES=(torch==2.14.1 torchvision==0.29.1 open_clip_torch)

if [[ "$(realpath -m "$VENV")" == "$(realpath -m "$ROOT/.venv")" ]]; then
    echo "refusing to install open_clip into the main .venv ($VENV)" >&2
    exit 1
fi

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import open_clip, torch; assert torch.__version__.startswith('2.14.1')" 2>/dev/null; then
    echo "$VENV already has torch 2.14.1 + open_clip; nothing to do"
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# Say up front which torch wheel pip picked and how big it is (CPU or CUDA build).
"$VENV/bin/python" -m pip install --dry-run --quiet --report "$VENV/install-report.json" "${PACKAGES[@]}"
"$VENV/bin/python" - "$VENV/install-report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
for item in report["install"]:
    name = item["metadata"]["name"]
    if name == "torch" or name.startswith("nvidia"):
        print(f"pip will install {name} {item['metadata']['version']} from {item['download_info']['url'].rsplit('/', 1)[-1]}")
EOF
"$VENV/bin/python" -m pip install "${PACKAGES[@]}"
"$VENV/bin/python" -c "import torch, torchvision, open_clip; print('torch', torch.__version__, '| torchvision', torchvision.__version__, '| open_clip', open_clip.__version__)"
du -sh "$VENV"
