"""What the machine runs fast: precision and thread count chosen from the hardware, never assumed.

A bf16 matmul is 2-3x faster than fp32 on CPUs with native bf16 (AVX-512-bf16, AMX) and over 100x slower on
CPUs without it (AVX2 only), so ``auto`` asks the device; threads come from the cores this process may use
(affinity and cgroup quota) less those other processes keep busy. Both choices are returned with the reason, so
runs can record them beside their figures. The bottom layer: imports nothing from polymodal.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Accepted spellings of fp32: Accelerate's "no" (older recipes and config.yaml files) and torch's name.
_FP32_ALIASES = ("no", "fp32", "float32")
# The environment variable that pins what ``auto`` means (e.g. fp32, so results match across machines).
PRECISION_ENV = "POLYMODAL_PRECISION"
# The environment variable that pins the number of compute threads (skips the load measurement).
THREADS_ENV = "POLYMODAL_THREADS"
# CPU flags worth recording beside a figure: they decide which kernels run.
FLAGS_OF_INTEREST = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx_vnni")
# Environment variables that cap the instruction sets torch, oneDNN, MKL and numpy use below what the CPU has: set,
# they make an AVX-512 machine run the kernels of an AVX2-only one, so a figure records them beside the flags.
ISA_CAP_ENVS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "NPY_DISABLE_CPU_FEATURES")
# The preloaded library (benchmarks/avx2_cpuid.c) under which the process's CPUID reports an AVX2-only CPU, so
# libraries that read CPUID themselves (onnxruntime, fbgemm, faiss) are capped too.
CPUID_SHIM = "avx2_cpuid.so"
CPUID_MASKED_ENV = "POLYMODAL_CPUID_MASKED"


def normalize_precision(value: str) -> str:
    """``auto``, ``fp32``, ``bf16`` or ``fp16`` from any accepted spelling; a clear error otherwise."""
    name = str(value).strip().lower()
    if name in _FP32_ALIASES:
        return "fp32"
    if name in ("bfloat16",):
        return "bf16"
    if name in ("float16", "half"):
        return "fp16"
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or 'no' for fp32), got {value!r}")
    return name


# ----------------------------------------------------------------------------------------------- the CPU


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: tuple[str, ...]  # those of FLAGS_OF_INTEREST the CPU has

    def describe(self) -> str:
        return f"{self.model} ({' '.join(self.flags) or 'no AVX2'})"


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU's model name and the instruction-set flags that decide which kernels run."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and value.strip():
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
            if flags and model:
                break
    except OSError:
        pass
    return CpuInfo(model, tuple(f for f in FLAGS_OF_INTEREST if f in flags))


def isa_caps() -> dict[str, str]:
    """The instruction-set caps in effect (:data:`ISA_CAP_ENVS` that are set, by variable; ``LD_PRELOAD`` when it
    holds :data:`CPUID_SHIM` and the shim says its masking took effect)."""
    caps = {name: os.environ[name] for name in ISA_CAP_ENVS if os.environ.get(name)}
    preload = os.environ.get("LD_PRELOAD", "")
    # The shim sets POLYMODAL_CPUID_MASKED in each process where the masking took effect.
    shimmed = any(Path(entry).name == CPUID_SHIM for entry in preload.replace(":", " ").split())
    if shimmed and os.environ.get(CPUID_MASKED_ENV):
        caps["LD_PRELOAD"] = preload
    return caps


def kernels_note() -> str:
    """Which vector kernels torch runs (``AVX512``, ``AVX2``, ...), with the caps that lowered them, if any."""
    caps = isa_caps()
    capped = f" (capped: {' '.join(f'{k}={v}' for k, v in caps.items())})" if caps else ""
    return f"{torch.backends.cpu.get_cpu_capability()} kernels{capped}"


def bf16_native(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bf16 matmuls in native, fast kernels (oneDNN on CPU; the GPU's own report on CUDA)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def matmul_gflops(dtype: torch.dtype, n: int = 2048, *, seconds: float = 0.5, device: str = "cpu") -> float:
    """Measured (n x n) @ (n x n) matmul rate in GFLOP/s: repetitions for about ``seconds`` after one warm-up."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    reps, started = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return 2 * n**3 * reps / elapsed / 1e9


def matmul_peaks(seconds: float = 0.2, precisions: Sequence[str] = ("fp32", "bf16")) -> dict[str, float]:
    """Matmul peaks in GFLOP/s of ``precisions`` (fp32, bf16; the best of sizes 512-2048), for MFU and the record
    beside a figure.

    Where bf16 has no native kernels it is measured at 256 only: a 2048 matmul in the slow fallback takes about
    20 s, and the rate it shows is no better at larger sizes."""
    sizes = {"fp32": (512, 1024, 2048), "bf16": (512, 1024, 2048) if bf16_native("cpu") else (256,)}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    names = [normalize_precision(name) for name in precisions]
    unknown = [name for name in names if name not in sizes]
    if unknown:
        raise ValueError(f"matmul peaks are measured for fp32 and bf16, not {', '.join(unknown)}")
    return {name: max(matmul_gflops(dtypes[name], n, seconds=seconds) for n in sizes[name]) for name in names}


def machine_header(peaks: dict[str, float] | None = None, precisions: Sequence[str] = ("fp32", "bf16")) -> str:
    """One line for a benchmark's output: CPU, flags, torch, threads and matmul peaks (given, or measured now for
    ``precisions``: only those a benchmark runs, as a bf16 peak takes minutes on a CPU without native bf16; none for
    a benchmark without matmuls)."""
    info = cpu_info()
    peaks = matmul_peaks(precisions=precisions) if peaks is None else peaks
    measured = ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in peaks.items())
    return (
        f"machine: {info.describe()}; {kernels_note()}; native bf16: {'yes' if bf16_native('cpu') else 'no'}; "
        f"torch {torch.__version__}, "
        f"{threads_phrase(torch.get_num_threads())}" + (f"; matmul peak {measured}" if measured else "")
    )


def bf16_slowdown() -> tuple[float, float, float]:
    """(fp32 / bf16 time ratio, fp32 GFLOP/s, bf16 GFLOP/s) of a small matmul on this CPU: about 0.1 s."""
    fp32 = matmul_gflops(torch.float32, 256, seconds=0.02)
    bf16 = matmul_gflops(torch.bfloat16, 256, seconds=0.02)
    return fp32 / max(bf16, 1e-9), fp32, bf16


# ----------------------------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a job runs in, what was asked for and why this one."""

    requested: str
    precision: str  # fp32 | bf16 | fp16
    reason: str

    @property
    def accelerate_name(self) -> str:
        """Accelerate's ``mixed_precision`` value."""
        return "no" if self.precision == "fp32" else self.precision

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def autocast(self, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager[Any]:
        """Autocast to the chosen dtype (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=torch.device(device).type, dtype=self.dtype)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def choose_precision(requested: str = "auto", device: torch.device | str = "cpu") -> PrecisionChoice:
    """Resolve ``auto`` from the device; check an explicit choice against it.

    auto: bf16 where the device runs it natively (CUDA with bf16, a CPU where oneDNN reports bf16), fp16 on CUDA
    without bf16, fp32 otherwise; ``POLYMODAL_PRECISION`` pins it. An explicit bf16 on a CPU without native bf16
    runs, with a warning that gives the measured slowdown; fp16 on CPU is an error (no fast kernels, and
    Accelerate would silently train in fp32).
    """
    asked = normalize_precision(requested)
    kind = torch.device(device).type
    if asked != "auto":
        return _checked(asked, asked, kind, "asked for")
    pinned = os.environ.get(PRECISION_ENV, "").strip()
    if pinned:
        try:
            chosen = normalize_precision(pinned)
        except ValueError as e:
            raise ValueError(f"{PRECISION_ENV}={pinned!r}: {e}") from None
        if chosen != "auto":
            return _checked("auto", chosen, kind, f"{PRECISION_ENV}={pinned}")
    if bf16_native(device):
        why = "CUDA device supports bf16" if kind == "cuda" else "CPU runs bf16 natively (oneDNN reports bf16 support)"
        return PrecisionChoice("auto", "bf16", why)
    if kind == "cuda":
        return PrecisionChoice("auto", "fp16", "CUDA device without bf16")
    return PrecisionChoice("auto", "fp32", f"{kind.upper()} without native bf16 (bf16 would fall back to slow kernels)")


def _checked(requested: str, precision: str, kind: str, reason: str) -> PrecisionChoice:
    """``precision`` on a ``kind`` device: fp16 off CUDA is an error, bf16 without native kernels a warning."""
    if precision == "fp16" and kind != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU; on {kind.upper()} use auto, bf16 or fp32")
    if precision == "bf16" and kind == "cpu" and not bf16_native(kind):
        ratio, fp32, bf16 = bf16_slowdown()
        print(
            f"warning: bf16 on this CPU ({cpu_info().model}) has no native kernels: a matmul measured {ratio:.0f}x "
            f"slower than fp32 ({bf16:.1f} vs {fp32:.1f} GFLOP/s); use precision auto or fp32",
            file=sys.stderr,
            flush=True,
        )
        reason = f"{reason}; {ratio:.0f}x slower than fp32 here (no native bf16)"
    return PrecisionChoice(requested, precision, reason)


# ----------------------------------------------------------------------------------------------- threads


def _cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup quota allows (cgroup v2 ``cpu.max`` or v1 ``cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def allowed_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity; all of them where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by the cgroup's CPU quota (not the host's count)."""
    cores = len(allowed_cpus())
    quota = _cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 0.05)))
    return max(1, cores)


class BusyMeter:
    """How many of our CPUs other processes keep busy, from ``/proc/stat`` and our own ``/proc/self/stat``.

    Busy time of the allowed CPUs minus this process's own CPU time, over the time between two readings. Our
    DataLoader workers are other processes, so they count as busy: the main process leaves their cores to them.
    """

    def __init__(self, cpus: list[int] | None = None, proc: Path = Path("/proc")) -> None:
        self.cpus = set(allowed_cpus() if cpus is None else cpus)
        self.proc = proc
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy CPU-seconds of our CPUs, our own CPU-seconds), None where /proc is missing."""
        try:
            busy = 0
            for line in (self.proc / "stat").read_text().splitlines():
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in self.cpus:
                    continue
                ticks = [int(v) for v in values]
                busy += sum(ticks[:8]) - ticks[3] - ticks[4]  # everything but idle and iowait
            own_fields = (self.proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
            own = int(own_fields[11]) + int(own_fields[12])  # utime + stime of all our threads
        except (OSError, ValueError, IndexError):
            return None
        return time.monotonic(), busy / self.tick, own / self.tick

    def others_busy(self) -> float | None:
        """Cores other processes kept busy since the last call (None when it cannot be measured)."""
        now = self._read()
        before, self.last = self.last, now
        if now is None or before is None or now[0] - before[0] < 0.05:
            return None
        wall = now[0] - before[0]
        return max(0.0, ((now[1] - before[1]) - (now[2] - before[2])) / wall)


@dataclass
class ThreadChoice:
    threads: int
    usable: int  # cores this process may use
    others_busy: float | None  # cores other processes kept busy when chosen
    reason: str
    changes: list[dict[str, Any]] = field(default_factory=list)  # later adjustments (adaptive budgets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def threads_for(usable: int, others_busy: float | None, reserved: int = 0) -> int:
    """Threads that leave the cores others are using alone: a core counts as taken when it is over 70% busy."""
    taken = 0 if others_busy is None else math.floor(others_busy + 0.3)
    return max(1, min(usable, usable - taken - reserved))


class ThreadBudget:
    """The compute threads of this process: torch's, and FAISS's and onnxruntime's where they are used.

    Chosen once from the usable cores and the load other processes put on them (measured over ``window``
    seconds), then held: a training run keeps its thread count, as the count changes the order of float sums
    and so the bits of the result. ``adaptive`` budgets (a server) re-measure every ``interval`` seconds in
    :meth:`update` and follow the load. ``POLYMODAL_THREADS`` (else ``OMP_NUM_THREADS``) pins the count; the
    processes of a launch (``LOCAL_WORLD_SIZE``) share the cores; ``reserved`` cores are left to the process's
    own workers (DataLoader worker processes).
    """

    def __init__(
        self,
        *,
        reserved: int = 0,
        adaptive: bool = False,
        fixed: int | None = None,
        interval: float = 5.0,
        window: float = 0.2,
        meter_factory: Callable[[], BusyMeter] | None = None,
        usable: int | None = None,
    ) -> None:
        """``fixed`` (a setting such as ``train.threads``) wins over ``POLYMODAL_THREADS``, which wins over the load."""
        self.reserved = reserved
        self.adaptive = adaptive
        self.interval = interval
        # Processes of one launch on this machine share its cores.
        local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        self.usable = usable if usable is not None else max(1, usable_cores() // local_processes)
        self.meter: BusyMeter | None = None
        pinned_by = next((name for name in (THREADS_ENV, "OMP_NUM_THREADS") if os.environ.get(name, "").strip()), None)
        if fixed is not None:
            self.choice = ThreadChoice(fixed, self.usable, None, "set in the configuration")
        elif pinned_by is not None:  # OMP_NUM_THREADS: set by the user or a launcher (torchrun sets 1)
            pinned = os.environ[pinned_by].strip()
            if not pinned.isdigit() or int(pinned) < 1:
                raise ValueError(f"{pinned_by}={pinned!r}: give a whole number of threads >= 1")
            self.choice = ThreadChoice(int(pinned), self.usable, None, f"{pinned_by}={pinned}")
        else:
            self.meter = (meter_factory or BusyMeter)()
            if window > 0:
                time.sleep(window)
            busy = self.meter.others_busy()
            count = threads_for(self.usable, busy, reserved)
            self.choice = ThreadChoice(count, self.usable, None if busy is None else round(busy, 2), self._reason(busy))
        self._next_check = time.monotonic() + interval
        apply_threads(self.choice.threads)

    @property
    def chosen_from_load(self) -> bool:
        """Whether the count came from the measured load (not from a setting or POLYMODAL_THREADS)."""
        return self.meter is not None

    def pin(self, count: int, reason: str) -> None:
        """Hold ``count`` threads from now on (a resumed run takes the count it started with)."""
        self.adaptive = False
        self.choice = ThreadChoice(count, self.usable, self.choice.others_busy, reason)
        apply_threads(count)

    def _reason(self, busy: float | None) -> str:
        parts = [f"{self.usable} usable cores (affinity and cgroup quota)"]
        if busy is not None and busy >= 0.7:
            parts.append(f"{busy:.1f} kept busy by other processes")
        if self.reserved:
            parts.append(f"{self.reserved} left to DataLoader workers")
        return ", ".join(parts)

    @property
    def threads(self) -> int:
        return self.choice.threads

    def update(self) -> int:
        """For adaptive budgets: follow the load when ``interval`` has passed (cheap to call every batch)."""
        if not self.adaptive or self.meter is None or time.monotonic() < self._next_check:
            return self.choice.threads
        self._next_check = time.monotonic() + self.interval
        busy = self.meter.others_busy()
        count = threads_for(self.usable, busy, self.reserved)
        if count != self.choice.threads:
            self.choice.changes.append({"time": time.time(), "threads": count, "others_busy": busy})
            self.choice.changes[:] = self.choice.changes[-20:]
            self.choice.threads = count
            apply_threads(count)
        return count


def apply_threads(count: int) -> None:
    """Set torch's intra-op threads, and FAISS's OpenMP threads when FAISS is loaded, to ``count``."""
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    faiss = sys.modules.get("faiss")
    if faiss is not None and hasattr(faiss, "omp_set_num_threads"):
        faiss.omp_set_num_threads(count)


# The OpenMP runtimes a torch build ships in torch/lib (GNU, Intel, LLVM).
OPENMP_RUNTIMES = ("libgomp*.so*", "libiomp5*.so*", "libomp.so*", "libomp-*.so*")


def release_idle_threads() -> bool:
    """Free the calling thread's idle OpenMP workers (``omp_pause_resource_all``, soft) in torch's OpenMP runtime;
    False where it has none to call. Call it in a thread that is done computing while another thread computes on:
    with two OpenMP teams alive libgomp counts more threads than cores and cuts its spin-wait to 1,000 turns, so
    each small parallel region waits on a futex (a one-image embedding in a worker thread: 22 ms, 9 ms after)."""
    import ctypes

    library = Path(torch.__file__).parent / "lib"
    runtimes = sorted(p for pattern in OPENMP_RUNTIMES for p in library.glob(pattern))
    for path in runtimes:
        try:  # RTLD_NOLOAD: only a runtime this process already uses, never loading one
            pause = ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD | os.RTLD_LAZY).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
        return bool(pause(1) == 0)  # 1: omp_pause_soft (the threads go; settings stay)
    return False


def machine_record(precision: PrecisionChoice | None = None, threads: ThreadChoice | None = None) -> dict[str, Any]:
    """What a figure was measured on: CPU, flags, torch version, and the precision and threads chosen."""
    info = cpu_info()
    record: dict[str, Any] = {
        "cpu": info.model,
        "cpu_flags": list(info.flags),
        "torch": torch.__version__,
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": isa_caps(),
        "bf16_native": bf16_native("cpu"),
        "cuda": torch.cuda.is_available(),
    }
    if precision is not None:
        record["precision"] = precision.to_dict()
    if threads is not None:
        record["threads"] = threads.to_dict()
    return record


def threads_phrase(count: int) -> str:
    """``1 thread``, ``2 threads``."""
    return f"{count} thread{'s' * (count != 1)}"


def describe_record(record: dict[str, Any]) -> str:
    """``bf16, 2 threads on AMD EPYC (avx2 ... avx512_bf16)``: a :func:`machine_record` in one line."""
    flags = " ".join(record.get("cpu_flags", [])) or "no AVX2"
    if record.get("isa_caps"):
        flags += f"; capped to {record.get('kernels', '?')} kernels"
    parts = [record["precision"]["precision"]] if "precision" in record else []
    if "threads" in record:
        parts.append(threads_phrase(record["threads"]["threads"]))
    return f"{', '.join(parts)} on {record.get('cpu', '?')} ({flags}), torch {record.get('torch', '?')}"
