#!/usr/bin/env bash
# gpu_device.sh — run benchmarks/gpu_check.py on a lent GPU machine that has no internet.
#
# Why: the lent machine (one NVIDIA H200, Python 3.12 at /opt/torch/.venv, plain `python3`)
# already has torch 2.11 (CUDA), torchvision, lightning, torchmetrics, timm, numpy, scipy,
# matplotlib, pyyaml, pillow, opencv-python-headless, huggingface-hub, ... but not all of
# mtal's dependencies, and it cannot reach a package index. The few that are missing travel
# as wheel files in the ignored folder .whl/ of the working tree (pass it to the device run
# as carry [".whl"]; the repo's .venv does not travel and is not used), get installed with
# --target into /tmp/site there, and mtal itself is imported from src/ (PYTHONPATH, no pip
# install of mtal). The device budget is 15 minutes with no chance to debug, so everything
# is decided here.
#
#   bash benchmarks/gpu_device.sh wheels   # HERE (PyPI reachable): fill .whl/ (<= 45 MiB)
#   bash benchmarks/gpu_device.sh check    # ON THE DEVICE, repo root: install, run gpu_check
#
# What gpu_check.py needs beyond the device image (imports of its four checks, incl. the
# in-process 2-cycle `mtal loop` through the Lightning CLI), pinned to the versions the
# project's tests run with:
#   albumentations, albucore, stringzilla, simsimd   mtal.data.transforms imports albumentations
#   pydantic, pydantic-core, annotated-types,        albumentations' dependencies
#     typing-inspection, typing-extensions             (pydantic 2.14 needs typing-extensions
#                                                       >= 4.16, newer than the image may have,
#                                                       so a copy travels too; tiny)
#   jsonargparse, docstring-parser, typeshed-client  LightningCLI (jsonargparse[signatures])
#   faiss-cpu                                        mtal.search (the CPU reference + faiss)
# Left out on purpose:
#   wandb          imported lazily (mtal/tracking.py) only for loop.logger=wandb; the loop
#                  check runs configs/synthetic/smoke.yaml, whose logger is csv, and
#                  WANDB_MODE=disabled is set anyway.
#   pycocotools    only the nuImages data and the detection mAP paths import it.
#   segmentation-models-pytorch  only model=smp imports it (lazily); the checks use padnet.
#   faiss-gpu      optional; without it nearest-neighbour search on CUDA uses torch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WHEELS=(
    albumentations==2.0.8
    albucore==0.0.24
    stringzilla==5.3.2
    simsimd==6.5.16
    pydantic==2.14.4
    pydantic-core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
    jsonargparse==4.53.0
    docstring-parser==0.18.0
    typeshed-client==2.15.0
    faiss-cpu==1.15.1
)
MAX_MIB=45
# where `check` installs the wheels (a test points it elsewhere)
SITE="${GPU_SITE:-/tmp/site}"
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64
    manylinux2014_x86_64 manylinux1_x86_64)
EXTRA_PLATFORMS=(manylinux_2_24_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64
    manylinux_2_35_x86_64)

# "Name_X" and "1.2" -> "name_x-1.2-", the lower-cased start of the wheel's file name
wheel_prefix() {
    local name="${1%%==*}" version="${1##*==}"
    name="$(tr 'A-Z.-' 'a-z__' <<<"$name")"
    printf '%s-%s-' "$name" "$version"
}

download() {  # download SPEC PLATFORM...
    local spec="$1" args=() p
    shift
    for p in "$@"; do args+=(--platform "$p"); done
    python3 -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp "${args[@]}" -d .whl "$spec"
}

wheels() {
    local exclude spec f base keep total
    exclude="$(git rev-parse --git-path info/exclude)"
    mkdir -p "$(dirname "$exclude")"
    touch "$exclude"
    grep -qxF '/.whl/' "$exclude" || echo '/.whl/' >>"$exclude"
    mkdir -p .whl
    for spec in "${WHEELS[@]}"; do
        if ! download "$spec" "${PLATFORMS[@]}"; then
            echo "gpu_device: no wheel for $spec on ${PLATFORMS[*]}; trying ${EXTRA_PLATFORMS[*]} too" >&2
            download "$spec" "${PLATFORMS[@]}" "${EXTRA_PLATFORMS[@]}"
        fi
    done
    # one version of each package: drop wheels left from other pins
    shopt -s nullglob
    for f in .whl/*; do
        base="$(basename "$f" | tr 'A-Z' 'a-z')"
        keep=0
        for spec in "${WHEELS[@]}"; do
            [[ "$base" == "$(wheel_prefix "$spec")"*.whl ]] && keep=1
        done
        if [[ $keep == 0 ]]; then
            echo "gpu_device: removing $f (not in the pinned list)"
            rm -f -- "$f"
        fi
    done
    local have=(.whl/*.whl)
    if [[ ${#have[@]} != "${#WHEELS[@]}" ]]; then
        echo "gpu_device: expected ${#WHEELS[@]} wheels in .whl/, found ${#have[@]}" >&2
        exit 1
    fi
    ls -l .whl/
    total="$(cat .whl/*.whl | wc -c)"
    echo "gpu_device: ${#have[@]} wheels, $total bytes = $(awk -v b="$total" 'BEGIN{printf "%.1f", b/1048576}') MiB (limit $MAX_MIB MiB)"
    if ((total > MAX_MIB * 1048576)); then
        echo "gpu_device: .whl/ is over $MAX_MIB MiB" >&2
        exit 1
    fi
}

check() {
    shopt -s nullglob
    local have=(.whl/*.whl) rc=0
    if [[ ${#have[@]} == 0 ]]; then
        echo "gpu_device: no wheels in .whl/ (run 'wheels' first, and carry .whl to the device)" >&2
        exit 1
    fi
    if ! python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$SITE" "${have[@]}"; then
        # a venv made without pip (uv) has no `python3 -m pip`; these wheels hold no .data/
        # folder, so unpacking them is what `pip install --target` does
        echo "gpu_device: pip install failed; unpacking the wheels into $SITE instead"
        python3 - "$SITE" "${have[@]}" <<'EOF'
import sys
import zipfile

for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
EOF
    fi
    export PYTHONPATH="$PWD/src:$SITE" WANDB_MODE=disabled NO_ALBUMENTATIONS_UPDATE=1 \
        PYTHONUNBUFFERED=1
    nvidia-smi -L || echo "gpu_device: nvidia-smi -L failed"
    python3 -c 'import sys, torch; print(f"python {sys.version.split()[0]} ({sys.executable}); torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")'
    # imports first, so a missing package shows as one clear traceback (not fatal here)
    python3 -c 'import torch, faiss, albumentations, jsonargparse, lightning, numpy
from lightning.pytorch.cli import _JSONARGPARSE_SIGNATURES_AVAILABLE as sig
import mtal.cli, mtal.data.datamodule
print(f"imports ok: lightning {lightning.__version__}, numpy {numpy.__version__}, faiss {faiss.__version__}, albumentations {albumentations.__version__}, jsonargparse {jsonargparse.__version__}; jsonargparse[signatures]: {bool(sig)}")' ||
        echo "gpu_device: the import check failed (see above); running gpu_check anyway"
    python3 benchmarks/gpu_check.py --out "${OUT:-benchmarks}/gpu_check_results.md" || rc=$?
    echo "gpu_device: gpu_check exit status $rc"
    exit "$rc"
}

case "${1:-}" in
    wheels) wheels ;;
    check) check ;;
    *)
        echo "usage: bash benchmarks/gpu_device.sh wheels|check" >&2
        exit 2
        ;;
esac
