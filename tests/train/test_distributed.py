"""Two CPU processes (gloo) under ``accelerate launch`` train to the same weights as one
process on the same global batches: data is sharded, the CLIP loss gathers with gradient,
and only the main process writes.

On a CPU-only machine accelerate needs `--multi_gpu` to start several processes (it then
runs them on CPU with gloo); `--cpu` would start a single process."""

import os
import shutil
import subprocess
import sys
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

    double = tmp_path / "double" / "weights.safetensors"
    double.parent.mkdir()
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0", str(SCRIPT), str(double), *extra]
    result = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]

    from safetensors import safe_open

    with safe_open(str(double), "pt") as f:
        assert f.metadata()["world_size"] == "2"
    a, b = load_file(str(single)), load_file(str(double))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    # Only the main process wrote the metrics log: one line per logged step, not two.
    lines = (tmp_path / "double" / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
