"""Precision and threads chosen from the hardware: the capability checks are faked both ways."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polymodal import hardware
from polymodal.hardware import BusyMeter, ThreadBudget, choose_precision, threads_for, usable_cores
from polymodal.progress import ProgressReporter


@pytest.fixture
def unpinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the test suite's POLYMODAL_PRECISION / POLYMODAL_THREADS pins."""
    for name in (hardware.PRECISION_ENV, hardware.THREADS_ENV, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def fake_bf16(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)


@pytest.mark.parametrize("native", [True, False])
def test_auto_picks_bf16_only_where_the_device_runs_it_natively(
    monkeypatch: pytest.MonkeyPatch, unpinned: None, native: bool
) -> None:
    fake_bf16(monkeypatch, native)
    cpu = choose_precision("auto", "cpu")
    cuda = choose_precision("auto", "cuda")
    assert cpu.precision == ("bf16" if native else "fp32") and cpu.requested == "auto"
    assert cuda.precision == ("bf16" if native else "fp16")
    assert ("natively" in cpu.reason) == native and ("without native bf16" in cpu.reason) != native
    assert cpu.accelerate_name == ("bf16" if native else "no")


def test_explicit_bf16_without_native_kernels_runs_with_a_measured_warning(
    monkeypatch: pytest.MonkeyPatch, unpinned: None, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_bf16(monkeypatch, False)
    monkeypatch.setattr(hardware, "bf16_slowdown", lambda: (140.7, 126.6, 0.9))
    choice = choose_precision("bf16", "cpu")
    assert choice.precision == "bf16"  # the user's choice stands
    warning = capsys.readouterr().err
    assert "141x slower than fp32 (0.9 vs 126.6 GFLOP/s)" in warning and "use precision auto or fp32" in warning
    assert "141x slower" in choice.reason
    fake_bf16(monkeypatch, True)
    choose_precision("bf16", "cpu")
    assert capsys.readouterr().err == ""  # native: nothing to warn about


def test_the_slowdown_probe_measures_both_precisions_quickly() -> None:
    ratio, fp32, bf16 = hardware.bf16_slowdown()
    assert fp32 > 0 and bf16 > 0 and ratio == pytest.approx(fp32 / bf16)


def test_the_machine_header_measures_only_the_precisions_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    measured: list[torch.dtype] = []

    def fake_gflops(dtype: torch.dtype, n: int = 2048, **_: object) -> float:
        measured.append(dtype)
        return 100.0 + n / 512

    monkeypatch.setattr(hardware, "matmul_gflops", fake_gflops)
    header = hardware.machine_header(precisions=("fp32",))
    assert set(measured) == {torch.float32} and header.endswith("matmul peak fp32 104 GFLOP/s")
    measured.clear()
    assert set(hardware.matmul_peaks()) == {"fp32", "bf16"} and set(measured) == {torch.float32, torch.bfloat16}
    measured.clear()
    assert "fp32 7 GFLOP/s" in hardware.machine_header({"fp32": 7.0}, precisions=("bf16",)) and not measured
    with pytest.raises(ValueError, match="fp32 and bf16, not fp16"):
        hardware.matmul_peaks(precisions=("fp32", "fp16"))


def test_instruction_set_caps_are_recorded_beside_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*hardware.ISA_CAP_ENVS, "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    assert hardware.isa_caps() == {} and "capped" not in hardware.kernels_note()
    assert "capped" not in hardware.describe_record(hardware.machine_record())
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert hardware.isa_caps() == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert hardware.kernels_note().endswith("kernels (capped: ONEDNN_MAX_CPU_ISA=AVX2)")
    record = hardware.machine_record()
    assert record["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"} and record["kernels"]
    assert f"capped to {record['kernels']} kernels" in hardware.describe_record(record)


def test_capping_the_instruction_sets_to_avx2_turns_native_bf16_off() -> None:
    """What benchmarks/avx2_only.sh relies on: under the caps, an AVX-512 CPU reports and runs AVX2 kernels."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "avx2_only.sh"
    code = (
        "import torch; from polymodal import hardware; "
        "print(torch.backends.cpu.get_cpu_capability(), hardware.bf16_native('cpu'))"
    )
    out = subprocess.run([str(script), sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["AVX2", "False"]


# x86-64 machine code of `uint32_t f(uint32_t leaf, uint32_t subleaf)`: CPUID, returning EBX.
_CPUID_EBX = bytes.fromhex("5389f889f10fa289d85bc3")
_PRINT_AVX512F = (
    "import ctypes, mmap; code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC); "
    f"code.write({_CPUID_EBX!r}); "
    "address = ctypes.addressof(ctypes.c_char.from_buffer(code)); "
    "ebx = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32)(address)(7, 0); "
    "print(bool(ebx >> 16 & 1))"
)


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@pytest.mark.skipif(
    not {"avx512f", "cpuid_fault"} <= _cpu_flags() or shutil.which("gcc") is None,
    reason="needs an AVX-512 CPU that can fault on CPUID, and gcc to build benchmarks/avx2_cpuid.c",
)
def test_avx2_only_masks_avx512_in_cpuid_and_a_real_crash_still_crashes(tmp_path: Path) -> None:
    """Libraries that read CPUID themselves (onnxruntime, fbgemm) see an AVX2-only CPU under avx2_only.sh; a fault
    other than CPUID still reaches the program's own handler (faulthandler here) and ends the process."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "avx2_only.sh"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    plain = subprocess.run([sys.executable, "-c", _PRINT_AVX512F], capture_output=True, text=True, check=True)
    assert plain.stdout.split() == ["True"]
    shimmed = subprocess.run(
        [str(script), sys.executable, "-c", _PRINT_AVX512F], capture_output=True, text=True, check=True, env=env
    )
    assert shimmed.stdout.split() == ["False"]
    crash = subprocess.run(
        [str(script), sys.executable, "-X", "faulthandler", "-c", "import ctypes; ctypes.string_at(0)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert crash.returncode == -signal.SIGSEGV and "Segmentation fault" in crash.stderr
    killed = subprocess.run(  # a SIGSEGV sent by a process, not a fault, still ends it
        [
            str(script),
            sys.executable,
            "-c",
            "import os, signal, time; os.kill(os.getpid(), signal.SIGSEGV); time.sleep(5)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert killed.returncode == -signal.SIGSEGV
    blocked = (  # a thread that blocks SIGSEGV and then reads CPUID is not killed by it
        "import signal; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGSEGV}); "
        + _PRINT_AVX512F
        + "; from polymodal import hardware; print('LD_PRELOAD' in hardware.isa_caps())"
    )
    survived = subprocess.run(
        [str(script), sys.executable, "-c", blocked], capture_output=True, text=True, check=True, env=env
    )
    assert survived.stdout.split() == ["False", "True"]  # masked, and recorded among the caps


def test_the_cpuid_shim_is_recorded_among_the_caps(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in hardware.ISA_CAP_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so")
    assert hardware.isa_caps() == {}
    monkeypatch.setenv("LD_PRELOAD", f"/home/me/.cache/polymodal/{hardware.CPUID_SHIM}:/usr/lib/libjemalloc.so")
    monkeypatch.delenv(hardware.CPUID_MASKED_ENV, raising=False)
    assert hardware.isa_caps() == {}  # preloaded, but it could not mask (no CPUID faulting here)
    monkeypatch.setenv(hardware.CPUID_MASKED_ENV, "avx2")
    assert hardware.isa_caps() == {"LD_PRELOAD": os.environ["LD_PRELOAD"]}


def test_fp16_on_cpu_and_unknown_names_are_errors(unpinned: None) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        choose_precision("fp8", "cpu")
    assert choose_precision("no", "cpu").precision == "fp32"  # Accelerate's spelling of fp32


def test_the_environment_pins_what_auto_means(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bf16(monkeypatch, True)
    monkeypatch.setenv(hardware.PRECISION_ENV, "fp32")
    choice = choose_precision("auto", "cpu")
    assert (choice.precision, choice.requested, choice.reason) == ("fp32", "auto", "POLYMODAL_PRECISION=fp32")
    monkeypatch.setenv(hardware.PRECISION_ENV, "fast")
    with pytest.raises(ValueError, match="POLYMODAL_PRECISION='fast'"):
        choose_precision("auto", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_a_training_run_records_the_precision_chosen_and_why(
    monkeypatch: pytest.MonkeyPatch, unpinned: None, tmp_path: Path, native: bool
) -> None:
    from polymodal.train.trainer import Trainer
    from tests.train.test_trainer import MSETask, Regression, config, dataset

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    monkeypatch.setenv(hardware.THREADS_ENV, "1")
    trainer = Trainer(Regression(), MSETask(), dataset(), config(steps=2, precision="auto"), tmp_path, progress=False)
    assert trainer.accelerator.mixed_precision == ("bf16" if native else "no")
    result = trainer.fit()
    recorded = json.loads((tmp_path / "machine.json").read_text())
    assert recorded == result.machine
    assert recorded["precision"] == {
        "requested": "auto",
        "precision": "bf16" if native else "fp32",
        "reason": choose_precision("auto", "cpu").reason,
    }
    assert recorded["threads"]["threads"] == 1 and recorded["cpu"]
    assert hardware.describe_record(recorded).startswith(f"{'bf16' if native else 'fp32'}, 1 thread on ")


# ------------------------------------------------------------------------------------------------- threads


def test_threads_leave_the_cores_others_keep_busy() -> None:
    assert threads_for(2, None) == 2  # not measurable: all usable cores
    assert threads_for(2, 0.2) == 2  # light load elsewhere
    assert threads_for(2, 0.9) == 1  # another process holds one of two cores
    assert threads_for(2, 3.5) == 1  # never fewer than one
    assert threads_for(8, 2.0, reserved=2) == 4  # DataLoader workers keep cores of their own
    assert threads_for(4, 0.0) == 4


def write_proc(root: Path, busy_ticks: dict[int, int], own_ticks: int) -> None:
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    for cpu, busy in busy_ticks.items():
        lines.append(f"cpu{cpu} {busy} 0 0 1000 0 0 0 0 0 0")  # user=busy, idle=1000
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("\n".join(lines) + "\n")
    # pid (comm with ) inside) state ... utime is field 14, stime field 15 of /proc/self/stat
    fields = ["S"] + ["0"] * 10 + [str(own_ticks), "0"] + ["0"] * 30
    (root / "self" / "stat").write_text("123 (python (x)) " + " ".join(fields) + "\n")


def test_the_busy_meter_counts_other_processes_on_our_cpus_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([100.0, 102.0])
    monkeypatch.setattr(hardware.time, "monotonic", lambda: next(clock))
    write_proc(tmp_path, {0: 0, 1: 0, 2: 0}, own_ticks=0)
    meter = BusyMeter(cpus=[0, 1], proc=tmp_path)
    meter.tick = 100
    # 2 s later: cpu0 and cpu1 were busy 150 + 200 ticks (3.5 CPU-s), 150 ticks of it ours; cpu2 is not ours.
    write_proc(tmp_path, {0: 150, 1: 200, 2: 200}, own_ticks=150)
    assert meter.others_busy() == pytest.approx((3.5 - 1.5) / 2.0)


def test_usable_cores_follow_affinity_and_the_cgroup_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "allowed_cpus", lambda: [0, 1, 2, 3])
    assert usable_cores(tmp_path) == 4  # no cgroup files: affinity alone
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # cgroup v2: 1.5 CPUs
    assert usable_cores(tmp_path) == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cores(tmp_path) == 4
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1: 1 CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path) == 1


class FakeMeter:
    def __init__(self, readings: list[float | None]) -> None:
        self.readings = readings

    def others_busy(self) -> float | None:
        return self.readings.pop(0)


def test_a_budget_takes_the_free_cores_and_an_adaptive_one_follows_the_load(
    monkeypatch: pytest.MonkeyPatch, unpinned: None
) -> None:
    before = torch.get_num_threads()
    try:
        meter = FakeMeter([1.0, 0.0, 0.0])
        budget = ThreadBudget(usable=2, window=0, interval=0, adaptive=True, meter_factory=lambda: meter)  # type: ignore[arg-type, return-value]
        assert budget.threads == 1 and torch.get_num_threads() == 1
        assert "1.0 kept busy by other processes" in budget.choice.reason
        assert budget.update() == 2 and torch.get_num_threads() == 2  # the other process finished
        assert budget.choice.changes[-1]["threads"] == 2
        held = ThreadBudget(usable=2, window=0, interval=0, meter_factory=lambda: FakeMeter([0.0, 1.0]))  # type: ignore[arg-type, return-value]
        assert held.threads == 2 and held.update() == 2  # not adaptive: a training run keeps its count
        assert ThreadBudget(usable=2, fixed=1).choice.reason == "set in the configuration"
        monkeypatch.setenv(hardware.THREADS_ENV, "3")
        assert ThreadBudget(usable=2).threads == 3
        monkeypatch.setenv(hardware.THREADS_ENV, "many")
        with pytest.raises(ValueError, match="POLYMODAL_THREADS='many'"):
            ThreadBudget(usable=2)
        monkeypatch.delenv(hardware.THREADS_ENV)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets for its processes
        assert ThreadBudget(usable=2).choice.reason == "OMP_NUM_THREADS=1"
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(hardware, "usable_cores", lambda *a: 4)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes of one launch on this machine
        assert ThreadBudget(window=0, meter_factory=lambda: FakeMeter([0.0])).threads == 2  # type: ignore[arg-type, return-value]
    finally:
        torch.set_num_threads(before)


def test_the_real_meter_measures_something_on_linux() -> None:
    meter = BusyMeter()
    if meter.last is None:
        pytest.skip("no /proc here")
    sum(i * i for i in range(200_000))
    busy = meter.others_busy()
    assert busy is None or busy >= 0.0


def test_a_resumed_run_keeps_the_thread_count_it_started_with(
    monkeypatch: pytest.MonkeyPatch, unpinned: None, tmp_path: Path
) -> None:
    from polymodal.train.trainer import Trainer
    from tests.train.test_trainer import MSETask, Regression, config, dataset

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(hardware, "usable_cores", lambda *a: 2)
        monkeypatch.setattr(hardware, "BusyMeter", lambda: FakeMeter([1.0]))
        cfg = config(steps=4, checkpoint_every=2)
        first = Trainer(Regression(), MSETask(), dataset(), cfg, tmp_path, progress=False)
        assert first.threads.threads == 1  # another process was busy when it started
        first.fit()
        monkeypatch.setattr(hardware, "BusyMeter", lambda: FakeMeter([0.0]))
        again = Trainer(
            Regression(), MSETask(), dataset(), config(steps=6, checkpoint_every=2), tmp_path, progress=False
        )
        assert again.threads.threads == 2  # the machine is quiet now ...
        again.resume()
        assert again.threads.threads == 1 and torch.get_num_threads() == 1  # ... but the run continues as it began
        assert "resumed run keeps its thread count" in again.threads.choice.reason
        again.fit()
        first_record = json.loads((tmp_path / "machine.json").read_text())["started_with"]
        assert first_record["threads"]["threads"] == 1
        third = Trainer(
            Regression(), MSETask(), dataset(), config(steps=8, checkpoint_every=2), tmp_path, progress=False
        )
        third.resume()  # a second resume: still the count, and the record, of how the run first started
        third.fit()
        assert third.threads.threads == 1
        assert json.loads((tmp_path / "machine.json").read_text())["started_with"] == first_record
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------- progress


def test_progress_in_a_terminal_is_a_bar_and_the_log_file_still_gets_lines(tmp_path: Path) -> None:
    stream = io.StringIO()
    with ProgressReporter(
        "embed", 10, stream=stream, terminal=True, log_file=tmp_path / "log.txt", every_percent=50
    ) as progress:
        for done in range(1, 11):
            progress.update(done, f"{done * 10} items/s")
    logged = (tmp_path / "log.txt").read_text().splitlines()
    assert [line.split()[1] for line in logged] == ["5/10", "10/10"] and "100 items/s" in logged[-1]
    assert "10/10" in stream.getvalue()  # rich's bar, drawn on the stream


def test_progress_lines_say_eta(tmp_path: Path) -> None:
    stream = io.StringIO()
    with ProgressReporter("index", 4, stream=stream, terminal=False) as progress:
        progress.update(1)
        progress.update(4)
        progress.update(4)  # the end reported twice (a last chunk, then the build's end): one line
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("index 1/4 (25%)  elapsed 0:00:00  ETA ") and lines[-1].startswith("index 4/4 (100%)")
    assert len(lines) == 2


def test_progress_of_unknown_total_is_a_count_every_few_seconds_and_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [0.0]
    monkeypatch.setattr("polymodal.progress.time.perf_counter", lambda: now[0])
    stream = io.StringIO()
    with ProgressReporter("checked", None, stream=stream, terminal=False, log_file=tmp_path / "log.txt") as progress:
        for done, seconds in enumerate([3.0, 9.0, 10.5, 11.0, 25.0], 1):  # a line at 10.5 s and at 25 s
            now[0] = seconds
            progress.update(done * 1000)
        now[0] = 26.0
        progress.update(5500)  # within the interval: only the end says it
    lines = stream.getvalue().splitlines()
    assert lines == [
        "checked 3,000  elapsed 0:00:10",
        "checked 5,000  elapsed 0:00:25",
        "checked 5,500  elapsed 0:00:26",
    ]
    assert (tmp_path / "log.txt").read_text().splitlines() == lines


def test_releasing_idle_openmp_workers_leaves_torch_working() -> None:
    """The server frees the loading thread's OpenMP workers (see release_idle_threads); torch's next parallel work
    starts new ones, in any thread, with the same thread count."""
    import threading

    def threads_of_this_process() -> int:
        return len(list(Path("/proc/self/task").iterdir()))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = torch.randn(512, 512)
        expected = x @ x  # parallel work: this thread's OpenMP team now exists
        library = Path(torch.__file__).parent / "lib"
        loaded = Path("/proc/self/maps").read_text()
        has_runtime = any(path.name in loaded for p in hardware.OPENMP_RUNTIMES for path in library.glob(p))
        with_team = threads_of_this_process()
        assert hardware.release_idle_threads() is has_runtime
        if has_runtime:
            assert threads_of_this_process() < with_team  # its idle workers are gone
        assert hardware.release_idle_threads() is has_runtime  # nothing left to free is fine too
        assert torch.get_num_threads() == 2
        results: list[torch.Tensor] = []
        worker = threading.Thread(target=lambda: results.append(x @ x))
        worker.start()
        worker.join()
        torch.testing.assert_close(results[0], expected)
        torch.testing.assert_close(x @ x, expected)
    finally:
        torch.set_num_threads(before)


def test_thread_counts_read_as_english() -> None:
    from polymodal.hardware import threads_phrase

    assert (threads_phrase(1), threads_phrase(2)) == ("1 thread", "2 threads")
