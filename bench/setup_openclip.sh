#!/usr/bin/env bash
# A separate venv with open_clip's trainer, for bench/bench_train.py (never in tests or CI:
# it pulls torch 2.14.1 and torchvision 0.29.1, about 6 GB).
#   bash bench/setup_openclip.sh [VENV_DIR]   (default: ../openclip-venv next to the repo)
set -euo pipefail
venv="${1:-$(cd "$(dirname "$0")/../.." && pwd)/openclip-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q "open-clip-torch[training]" pandas "webdataset<=0.2.86"
"$venv/bin/python" -c "import open_clip, open_clip_train, torch; print('open_clip', open_clip.__version__, 'torch', torch.__version__)"
echo "$venv"
