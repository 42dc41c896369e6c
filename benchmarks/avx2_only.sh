#!/usr/bin/env bash
# Runs a command with torch, oneDNN, MKL and numpy capped to AVX2 kernels: an AVX-512 machine then runs what an
# AVX2-only CPU (such as a Zen 3) runs, bf16 included (not native: the slow fallback). Figures taken this way say so:
# polymodal.hardware records the caps beside the CPU flags. Zen 4 splits each AVX-512 op into two 256-bit halves, so
# its fp32 peak is the same under the caps; clocks and caches are still the host's.
#   benchmarks/avx2_only.sh .venv/bin/python benchmarks/embedding_throughput.py --trained-text
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: benchmarks/avx2_only.sh COMMAND [ARGS...]" >&2
    exit 2
fi
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
exec "$@"
