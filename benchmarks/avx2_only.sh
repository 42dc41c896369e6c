#!/usr/bin/env bash
# Runs a command as an AVX2-only CPU (such as a Zen 3) would: torch, oneDNN, MKL and numpy are held to their AVX2
# kernels by their own variables, and where the CPU can fault on CPUID (flag cpuid_fault; gcc needed) the process's
# CPUID also reports no AVX-512, VNNI or bf16 (avx2_cpuid.c), so libraries that read CPUID themselves (onnxruntime,
# fbgemm, faiss, OpenBLAS) run their AVX2 kernels too. bf16 is then not native (the slow fallback). Figures taken
# this way say so: polymodal.hardware records the caps beside the CPU flags. Zen 4 splits each AVX-512 op into two
# 256-bit halves, so its fp32 peak is the same under the caps; clocks and caches are still the host's.
#   benchmarks/avx2_only.sh .venv/bin/python benchmarks/embedding_throughput.py --trained-text
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: benchmarks/avx2_only.sh COMMAND [ARGS...]" >&2
    exit 2
fi
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
export NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"

source="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/avx2_cpuid.c"
shim="${XDG_CACHE_HOME:-$HOME/.cache}/polymodal/avx2_cpuid.so"
if ! grep -qw cpuid_fault /proc/cpuinfo; then
    echo "avx2_only.sh: this CPU cannot fault on CPUID: onnxruntime, fbgemm and faiss still see its AVX-512" >&2
elif ! command -v gcc >/dev/null; then
    echo "avx2_only.sh: no gcc to build $source: onnxruntime, fbgemm and faiss still see the CPU's AVX-512" >&2
else
    if [ ! -f "$shim" ] || [ "$source" -nt "$shim" ]; then
        mkdir -p "$(dirname "$shim")"
        if gcc -O2 -Wall -shared -fPIC -o "$shim.$$" "$source" -ldl; then
            mv "$shim.$$" "$shim"
        else
            rm -f "$shim.$$"
            echo "avx2_only.sh: could not build $source: onnxruntime, fbgemm and faiss still see the CPU's AVX-512" >&2
        fi
    fi
    if [ -f "$shim" ]; then
        export LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}"
    fi
fi
exec "$@"
