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
    # Two failures were seen on a loaded 2-core machine. Rank 1 aborting (SIGABRT) after training was found
    # and fixed: see exit_launched_process (under two busy loops, 3 of 31 launches failed before, 0 of 40
    # after). A rank hanging before its first step was seen in earlier runs and never reproduced: the script
    # dumps every thread's stack and exits after 120 s, so a hang fails fast with a diagnosis, and the launch
    # is tried once more in a fresh directory. A wrong result is never retried: the comparison below runs
    # on the successful launch only.
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



def test_polymodal_train_under_accelerate_launch_reports_once(tmp_path: Path) -> None:
    """The README's command: both ranks train and exit 0, the main one writes the run and the one report."""
    import json

    from polymodal.data.shapes import generate_shapesworld

    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "shapes-clip.yaml"
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "0", "-m", "polymodal", "train", str(recipe),
           "--set", f"data.path={data}", "--set", "data.image.image_size=32", "--set", "train.steps=2",
           "--set", "train.batch_size=8", "--set", "train.warmup_steps=1", "--out", str(tmp_path / "run"), "--json"]  # fmt: skip
    result = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # exactly one JSON document: a second rank's would not parse
    assert report["steps"] == 2 and report["run_dir"] == str(tmp_path / "run")
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()

def test_exit_launched_process_flushes_output_and_keeps_the_code(tmp_path: Path) -> None:
    """It skips the interpreter's teardown (os._exit) but not what was printed or logged before."""
    script = tmp_path / "exits.py"
    log = tmp_path / "run.log"
    script.write_text(
        "import logging, sys\n"
        "from polymodal.train.trainer import exit_launched_process\n"
        f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
        "logging.info('logged before exit')\n"
        "print('printed before exit')\n"  # block-buffered into a pipe: lost if exit did not flush
        "sys.stderr.write('stderr before exit')\n"
        "exit_launched_process(3)\n"
        "print('never printed')\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "printed before exit\n"
    assert "stderr before exit" in result.stderr
    assert "logged before exit" in log.read_text()
