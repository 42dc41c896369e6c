"""Two CPU processes (gloo) under ``accelerate launch`` train to the same weights as one
process on the same global batches: data is sharded, the CLIP loss gathers with gradient,
and only the main process writes.

On a CPU-only machine accelerate needs `--multi_gpu` to start several processes (it then
runs them on CPU with gloo); `--cpu` would start a single process."""

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("ddp_contrastive.py")


@pytest.mark.parametrize("negatives", [False, True], ids=["clip", "clip+hard-negatives"])
def test_two_processes_match_one(tmp_path: Path, negatives: bool) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent)}
    extra = ["negatives"] if negatives else []
    single = tmp_path / "single" / "weights.safetensors"
    single.parent.mkdir()
    subprocess.run([sys.executable, str(SCRIPT), str(single), *extra], check=True, env=env, timeout=300)

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    # Known open defect: about one fresh-clone CI run in three on a loaded 2-core machine, one rank hung
    # (or aborted) before its first step, never reproduced by hand. The script dumps every thread's stack
    # and exits after 120 s, so a hang fails fast with a diagnosis; the launch is tried once more in a fresh
    # directory. A wrong result is never retried: the comparison below runs on the successful launch only.
    failures = []
    for attempt in ("double", "double-retry"):
        double = tmp_path / attempt / "weights.safetensors"
        double.parent.mkdir()
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", "0", str(SCRIPT), str(double), *extra]
        result = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
        if result.returncode == 0:
            break
        failures.append(result.stderr[-3000:])
        warnings.warn(f"2-process launch failed (retrying once); its stderr ends:\n{failures[-1]}", stacklevel=1)
    else:
        pytest.fail("both 2-process launches failed:\n" + "\n-----\n".join(failures))

    from safetensors import safe_open

    with safe_open(str(double), "pt") as f:
        assert f.metadata()["world_size"] == "2"
    a, b = load_file(str(single)), load_file(str(double))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    # Only the main process wrote the metrics log: one line per logged step, not two.
    lines = (double.parent / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
