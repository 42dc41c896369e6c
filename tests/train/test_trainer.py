"""Trainer: learns, resumes exactly (after an exception and after SIGKILL), accumulates
gradients correctly, early-stops on a metric and keeps the best checkpoint."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from polymodal.train.checkpoint import list_checkpoints
from polymodal.train.config import TrainConfig
from polymodal.train.trainer import Trainer


class Regression(nn.Module):
    def __init__(self, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.GELU(), nn.Dropout(dropout), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class MSETask(nn.Module):
    def __init__(self, fail_at_call: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.fail_at_call = fail_at_call

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.fail_at_call is not None and self.calls == self.fail_at_call:
            raise KeyboardInterrupt("simulated kill")
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return {"loss": loss, "mse": loss}


def dataset(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))


def config(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, checkpoint_every=3, log_every=1, seed=3)
    return TrainConfig(**{**base, **kw})


def train(run_dir: Path, task: nn.Module | None = None, resume: bool = False, **kw) -> tuple[Regression, Trainer]:
    torch.manual_seed(123)
    model = Regression()
    trainer = Trainer(model, task or MSETask(), dataset(), config(**kw), run_dir, progress=False)
    if resume:
        trainer.resume()
    trainer.fit()
    return model, trainer


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_learns_and_logs(tmp_path: Path) -> None:
    model, trainer = train(tmp_path, steps=60, checkpoint_every=None)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 60 and "lr" in records[0] and "samples_per_s" in records[0]
    assert records[-1]["mse"] < 0.5 * records[0]["mse"]
    assert [c.step for c in list_checkpoints(tmp_path)] == [60]  # final checkpoint always written
    # The same scalars as TensorBoard events, read back with TensorBoard's own reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    mse = events.Scalars("mse")
    assert [e.step for e in mse] == [r["step"] for r in records]
    assert mse[-1].value == pytest.approx(records[-1]["mse"], rel=1e-6)


def test_resume_after_interruption_matches_uninterrupted(tmp_path: Path) -> None:
    reference, _ = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", task=MSETask(fail_at_call=8))  # dies during step 8
    assert [c.step for c in list_checkpoints(tmp_path / "b")][-1] == 6
    resumed, trainer = train(tmp_path / "b", resume=True)
    assert trainer.step == 12
    assert same_weights(reference, resumed)


def test_resume_keeps_the_fused_optimizer_of_this_run(tmp_path: Path) -> None:
    """A checkpoint written by a per-tensor AdamW (as before the fused kernel) must not switch fused off."""
    train(tmp_path, steps=6, checkpoint_every=3)
    state_file = list_checkpoints(tmp_path)[-1].path / "state.pt"
    state = torch.load(state_file, weights_only=True)
    assert all(group["fused"] for group in state["optimizer"]["param_groups"])  # this trainer's own checkpoints
    for group in state["optimizer"]["param_groups"]:
        group["fused"], group["foreach"] = None, None  # what an older run saved
    torch.save(state, state_file)
    trainer = Trainer(Regression(), MSETask(), dataset(), config(steps=9), tmp_path, progress=False)
    assert trainer.resume() == 6
    assert all(g["fused"] is True and g["foreach"] is None for g in trainer.optimizer.param_groups)
    trainer.fit()  # and it trains on from there
    assert trainer.step == 9


def test_gradient_accumulation_equals_larger_batch(tmp_path: Path) -> None:
    big, _ = train(tmp_path / "big", batch_size=8, accumulate=1, checkpoint_every=None)
    acc, _ = train(tmp_path / "acc", batch_size=4, accumulate=2, checkpoint_every=None)
    for x, y in zip(big.state_dict().values(), acc.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


def test_early_stopping_and_best_checkpoint(tmp_path: Path) -> None:
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.4, 0.9])
    saved: list[int] = []
    torch.manual_seed(0)
    trainer = Trainer(
        Regression(), MSETask(), dataset(),
        config(steps=12, eval_every=2, checkpoint_every=2, keep_last=1, metric="score", early_stopping_patience=3),
        tmp_path, evaluate=lambda m: {"score": next(scores)},
        save_best=lambda m, p: saved.append(trainer.step), progress=False,
    )
    result = trainer.fit()
    assert result.stopped_early and result.step == 10
    assert result.best_metric == 0.7 and result.best_step == 4
    assert saved == [2, 4]
    assert [c.step for c in list_checkpoints(tmp_path)] == [4, 10]  # best kept beside the last


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="needs a metric"):
        TrainConfig(steps=5, early_stopping_patience=2)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=5, warmup_steps=6)


SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_trainer import train
from pathlib import Path
train(Path({run!r}), steps={steps}, checkpoint_every=1, resume=True)
"""


def test_sigkill_at_arbitrary_step_then_resume_matches(tmp_path: Path) -> None:
    """A real SIGKILL while training; the resumed run ends with the uninterrupted weights."""
    steps = 400
    reference, _ = train(tmp_path / "ref", steps=steps, checkpoint_every=None)
    run = tmp_path / "killed"
    script = SCRIPT.format(tests=str(Path(__file__).parent), run=str(run), steps=steps)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and len(list_checkpoints(run)) < 1:
        time.sleep(0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = list_checkpoints(run)[-1].step
    assert 0 < killed_at < steps, "the kill must land mid-run"
    resumed, trainer = train(run, steps=steps, checkpoint_every=None, resume=True)
    assert trainer.step == steps
    assert same_weights(reference, resumed)


def test_sampler_passes_epochs_and_dataset_redraws_captions_per_epoch() -> None:
    from polymodal.data.dataset import MultimodalDataset
    from polymodal.data.schema import Sample
    from polymodal.data.transforms import ImagePreprocess
    from polymodal.train.sampler import StepBatchSampler

    sampler = StepBatchSampler(4, 2, seed=0, num_batches=6, with_epoch=True)
    batches = list(sampler)
    assert [e for batch in batches for e, _ in batch] == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(i for batch in batches[:2] for _, i in batch) == [0, 1, 2, 3]
    samples = [Sample(id="a", text=[f"caption {k}" for k in range(50)])]
    dataset = MultimodalDataset(samples, ImagePreprocess(image_size=8), text_mode="random")
    picks = {dataset[(epoch, 0)]["extra"]["text"] for epoch in range(10)}
    assert len(picks) > 1, "the caption drawn must change with the epoch"
    assert dataset[(3, 0)]["extra"]["text"] == dataset[(3, 0)]["extra"]["text"]


def test_resume_after_early_stop_does_not_train_on(tmp_path: Path) -> None:
    scores = iter([0.5, 0.4, 0.3])
    cfg = config(steps=12, eval_every=2, checkpoint_every=2, metric="score", early_stopping_patience=2)
    trainer = Trainer(Regression(), MSETask(), dataset(), cfg, tmp_path, evaluate=lambda m: {"score": next(scores)}, progress=False)
    assert trainer.fit().step == 6
    again = Trainer(Regression(), MSETask(), dataset(), cfg, tmp_path, evaluate=lambda m: {"score": 1.0}, progress=False)
    again.resume()
    result = again.fit()
    assert result.step == 6 and result.stopped_early


def test_runs_with_different_precisions_in_one_process(tmp_path: Path) -> None:
    # The demo and pretrain -> fine-tune chains run several recipes in one process; Accelerate's
    # process-wide state would otherwise refuse the second precision.
    _, bf16 = train(tmp_path / "bf16", precision="bf16", steps=4)
    assert bf16.accelerator.mixed_precision == "bf16"
    model, fp32 = train(tmp_path / "fp32", precision="no", steps=4)
    assert fp32.accelerator.mixed_precision == "no"
    assert all(p.dtype == torch.float32 for p in model.parameters())
