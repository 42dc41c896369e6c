"""Trainer: learns, resumes exactly (after an exception and after SIGKILL), accumulates
gradients correctly, early-stops on a metric and keeps the best checkpoint."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from polymodal.train.checkpoint import list_checkpoints
from polymodal.train.config import TrainConfig
from polymodal.train.trainer import Trainer, TrainingInterrupted


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
    base = {
        "steps": 12,
        "batch_size": 8,
        "lr": 1e-2,
        "warmup_steps": 2,
        "checkpoint_every": 3,
        "log_every": 1,
        "seed": 3,
    }
    return TrainConfig(**{**base, **kw})


def train(run_dir: Path, objective: nn.Module | None = None, resume: bool = False, **kw) -> tuple[Regression, Trainer]:
    torch.manual_seed(123)
    model = Regression()
    trainer = Trainer(model, objective or MSETask(), dataset(), config(**kw), run_dir, progress=False)
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
    assert [c.step for c in list_checkpoints(tmp_path)] == [60]  # a short run: its last step only (100 steps apart)
    # The same scalars as TensorBoard events, read back with TensorBoard's own reader.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    mse = events.Scalars("mse")
    assert [e.step for e in mse] == [r["step"] for r in records]
    assert mse[-1].value == pytest.approx(records[-1]["mse"], rel=1e-6)


def test_by_default_checkpoints_come_every_tenth_of_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without train.checkpoint_every a kill (even SIGKILL, which writes nothing on the way out) loses at most a
    tenth of the run, or DEFAULT_CHECKPOINT_STEPS (a short run writes its last step only); checkpoint_every, when
    set, is the cadence instead."""
    from polymodal.train import config as train_config

    train(tmp_path / "short", steps=30, eval_every=7, checkpoint_every=None, keep_last=100)
    assert [c.step for c in list_checkpoints(tmp_path / "short")] == [30]
    monkeypatch.setattr(train_config, "DEFAULT_CHECKPOINT_STEPS", 1)  # as a long run would
    train(tmp_path / "default", steps=30, eval_every=7, checkpoint_every=None, keep_last=100)
    assert [c.step for c in list_checkpoints(tmp_path / "default")] == list(range(3, 31, 3))
    train(tmp_path / "set", steps=30, eval_every=7, checkpoint_every=10, keep_last=100)
    assert [c.step for c in list_checkpoints(tmp_path / "set")] == [10, 20, 30]
    reference, _ = train(tmp_path / "reference", checkpoint_every=None)
    with pytest.raises(KeyboardInterrupt):  # dies during step 8, as a SIGKILL would leave it
        train(tmp_path / "killed", objective=MSETask(fail_at_call=8), checkpoint_every=None)
    assert list_checkpoints(tmp_path / "killed")[-1].step == 6
    resumed, trainer = train(tmp_path / "killed", resume=True, checkpoint_every=None)
    assert trainer.step == 12 and same_weights(reference, resumed)


def test_resume_after_interruption_matches_uninterrupted(tmp_path: Path) -> None:
    reference, _ = train(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", objective=MSETask(fail_at_call=8))  # dies during step 8
    assert [c.step for c in list_checkpoints(tmp_path / "b")][-1] == 6
    resumed, trainer = train(tmp_path / "b", resume=True)
    assert trainer.step == 12
    assert same_weights(reference, resumed)


class CtrlC(MSETask):
    """Presses Ctrl-C (a real SIGINT to this process; or sends ``signum``) during the given calls, once per listed
    entry."""

    def __init__(self, *at_calls: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.at_calls, self.signum = list(at_calls), signum

    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = super().forward(model, batch)
        for call in self.at_calls:
            if call == self.calls:
                signal.raise_signal(self.signum)
        return out


@pytest.fixture
def python_ctrl_c() -> Iterator[None]:
    """Ctrl-C handled as Python does by default (a test runner may have changed it), restored afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ctrl_c_checkpoints_the_step_it_lands_in_and_the_run_resumes_exactly(
    tmp_path: Path, python_ctrl_c: None
) -> None:
    reference, _ = train(tmp_path / "a")
    with pytest.raises(TrainingInterrupted) as stop:
        train(tmp_path / "b", objective=CtrlC(8))  # during step 8; regular checkpoints at 3 and 6
    assert (stop.value.step, stop.value.checkpointed) == (8, True)
    assert str(stop.value) == (
        f"interrupted at step 8; checkpoint saved; resume with `polymodal train --resume {tmp_path / 'b'}`"
    )
    assert [c.step for c in list_checkpoints(tmp_path / "b")] == [6, 8]  # keep_last 2
    assert logged_steps(tmp_path / "b") == list(range(1, 9))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Python's own again
    resumed, trainer = train(tmp_path / "b", resume=True)
    assert trainer.step == 12 and same_weights(reference, resumed)
    assert logged_steps(tmp_path / "b") == list(range(1, 13))
    log = (tmp_path / "b" / "train.log").read_text()
    assert str(stop.value) in log and f"resuming {tmp_path / 'b'} from step 8" in log


def test_sigterm_checkpoints_the_step_it_lands_in_like_ctrl_c(tmp_path: Path, python_ctrl_c: None) -> None:
    """A scheduler's preemption or `docker stop` sends SIGTERM: the step ends and is checkpointed (its default
    would end the process at once, losing the steps since the last checkpoint)."""
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stop:
        train(tmp_path, objective=CtrlC(8, signum=signal.SIGTERM))
    assert (stop.value.step, stop.value.checkpointed, stop.value.signum) == (8, True, signal.SIGTERM)
    assert [c.step for c in list_checkpoints(tmp_path)] == [6, 8]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path: Path, python_ctrl_c: None) -> None:
    with pytest.raises(KeyboardInterrupt) as stop:
        train(tmp_path, objective=CtrlC(8, 8))
    assert not isinstance(stop.value, TrainingInterrupted)
    assert [c.step for c in list_checkpoints(tmp_path)] == [3, 6]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resuming_a_run_without_a_checkpoint_says_it_starts_from_step_0(tmp_path: Path) -> None:
    train(tmp_path, resume=True, steps=2)
    first = (tmp_path / "train.log").read_text().splitlines()[0]
    assert first == f"no checkpoint in {tmp_path} yet: starting from step 0"


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
        Regression(),
        MSETask(),
        dataset(),
        config(steps=12, eval_every=2, checkpoint_every=2, keep_last=1, metric="score", early_stopping_patience=3),
        tmp_path,
        validate=lambda m: {"score": next(scores)},
        save_best=lambda m, p: saved.append(trainer.step),
        progress=False,
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
    from polymodal.data.processors import ImageProcessor
    from polymodal.data.schema import Sample
    from polymodal.data.transforms import ImagePreprocess
    from polymodal.train.sampler import StepBatchSampler

    sampler = StepBatchSampler(4, 2, seed=0, num_batches=6, with_epoch=True)
    batches = list(sampler)
    assert [e for batch in batches for e, _ in batch] == [0] * 4 + [1] * 4 + [2] * 4
    assert sorted(i for batch in batches[:2] for _, i in batch) == [0, 1, 2, 3]
    samples = [Sample(id="a", text=[f"caption {k}" for k in range(50)])]
    dataset = MultimodalDataset(samples, {"image": ImageProcessor(ImagePreprocess(image_size=8))}, text_mode="random")
    picks = {dataset[(epoch, 0)]["extra"]["text"] for epoch in range(10)}
    assert len(picks) > 1, "the caption drawn must change with the epoch"
    assert dataset[(3, 0)]["extra"]["text"] == dataset[(3, 0)]["extra"]["text"]


def test_resume_after_early_stop_does_not_train_on(tmp_path: Path) -> None:
    scores = iter([0.5, 0.4, 0.3])
    cfg = config(steps=12, eval_every=2, checkpoint_every=2, metric="score", early_stopping_patience=2)
    trainer = Trainer(
        Regression(), MSETask(), dataset(), cfg, tmp_path, validate=lambda m: {"score": next(scores)}, progress=False
    )
    assert trainer.fit().step == 6
    again = Trainer(
        Regression(), MSETask(), dataset(), cfg, tmp_path, validate=lambda m: {"score": 1.0}, progress=False
    )
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed on a CUDA machine")
def test_fp16_on_cpu_is_an_error_not_silent_fp32(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        train(tmp_path, precision="fp16", steps=2)


def test_resumed_run_logs_each_step_once(tmp_path: Path) -> None:
    """Steps logged after the last checkpoint by the killed run are logged again by the resumed one: once only."""
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path, objective=MSETask(fail_at_call=8))  # checkpoints at 3 and 6, steps 1-7 logged, dies in step 8
    logged = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6, 7]
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "mse"')  # a line the kill cut short
    train(tmp_path, resume=True)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    mse = events.Scalars("mse")
    assert [e.step for e in mse] == list(range(1, 13))
    assert mse[-1].value == pytest.approx(records[-1]["mse"], rel=1e-6)


def test_logged_lr_is_the_recipe_lr_and_each_tower_has_its_own(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = Trainer(
        Regression(),
        MSETask(),
        dataset(),
        config(steps=4, warmup_steps=0, lr=1e-2),
        tmp_path,
        param_lrs={"net.0": 1e-4},
        progress=False,
    )
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-4  # the tower's group comes first
    trainer.fit()
    first = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 1 / 4)))
    assert first["lrs"] == {"net.0": pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi * 1 / 4)))}
    # Also when the towers' rates cover every parameter and no group has train.lr.
    whole = Trainer(
        Regression(),
        MSETask(),
        dataset(),
        config(steps=4, warmup_steps=0, lr=1e-2),
        tmp_path / "whole",
        param_lrs={"net": 1e-4},
        progress=False,
    )
    whole.fit()
    first = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["lr"] == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 1 / 4)))


def test_gradients_are_clipped_before_the_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = Trainer(Regression(), MSETask(), dataset(), config(steps=3, grad_clip=0.01), tmp_path, progress=False)
    norms: list[float] = []

    def record(optimizer: torch.optim.Optimizer, *_: object) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    trainer.optimizer.optimizer.register_step_pre_hook(record)
    trainer.fit()
    logged = [json.loads(line)["grad_norm"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(norms) == 3 and all(n == pytest.approx(0.01, rel=1e-3) for n in norms)
    assert all(n > 0.1 for n in logged)  # the log keeps the norm before clipping


class Checkpointable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 1)
        self.checkpointing = False

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.checkpointing = enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).squeeze(-1)


def test_gradient_checkpointing_flag_reaches_submodules(tmp_path: Path) -> None:
    for enabled in (False, True):
        model = nn.Sequential(Checkpointable())
        Trainer(
            model,
            MSETask(),
            dataset(),
            config(steps=2, gradient_checkpointing=enabled),
            tmp_path / str(enabled),
            progress=False,
        )
        assert model[0].checkpointing is enabled


def test_caption_objective_adds_the_weighted_contrastive_loss() -> None:
    from polymodal.data.collate import Batch
    from polymodal.modules.losses import CaptionLoss, ClipLoss
    from polymodal.train.objectives import CaptionObjective

    g = torch.Generator().manual_seed(0)
    out = {
        "logits": torch.randn(4, 6, 10, generator=g),
        "features": {"image": torch.randn(4, 8, generator=g), "text": torch.randn(4, 8, generator=g)},
    }
    ids, mask = torch.randint(0, 10, (4, 6), generator=g), torch.ones(4, 6, dtype=torch.bool)
    batch = Batch(ids=list("abcd"), inputs={"text": (ids, mask)}, present={"text": torch.ones(4, dtype=torch.bool)})
    losses = CaptionObjective(contrastive_weight=0.5)(lambda *_: out, batch)
    caption = CaptionLoss()(out["logits"], ids, mask)
    contrastive = ClipLoss()(out["features"]["image"], out["features"]["text"])
    torch.testing.assert_close(losses["loss"], caption + 0.5 * contrastive)
    assert set(losses) == {"loss", "caption", "contrastive"}
    # A batch without the source gives the model nothing to contrast: the caption loss alone.
    alone = CaptionObjective(contrastive_weight=0.5)(lambda *_: {"logits": out["logits"]}, batch)
    torch.testing.assert_close(alone["loss"], caption)


@pytest.mark.parametrize("sharded", ["FSDP", "DEEPSPEED"])
def test_sharded_launches_are_refused_not_half_saved(tmp_path: Path, sharded: str) -> None:
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    accelerator = SimpleNamespace(distributed_type=DistributedType[sharded])  # what such a launch configures
    with pytest.raises(ValueError, match=f"{sharded} is not supported.*--multi_gpu"):
        Trainer(Regression(), MSETask(), dataset(), config(), tmp_path, accelerator=accelerator, progress=False)  # type: ignore[arg-type]


def test_progress_without_a_terminal_is_a_line_every_few_percent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Piped to a file or a CI log, training says how it goes (step, loss, lr, samples/s, ETA) every 5%, and
    what it runs in; the run directory's train.log holds the same lines."""
    torch.manual_seed(0)
    Trainer(Regression(), MSETask(), dataset(), config(steps=40), tmp_path, progress=True).fit()
    shown = capsys.readouterr().err.splitlines()
    steps = [line for line in shown if line.startswith("train ")]
    assert [line.split()[1] for line in steps] == [f"{s}/40" for s in range(2, 41, 2)], shown
    for line in steps:
        assert all(part in line for part in ("loss ", "lr ", "samples/s", "elapsed ", "ETA ")), line
    assert shown[0].startswith("precision fp32 (POLYMODAL_PRECISION=fp32); 1 thread (POLYMODAL_THREADS=1)"), shown[0]
    assert (tmp_path / "train.log").read_text().splitlines() == shown
    machine = json.loads((tmp_path / "machine.json").read_text())
    assert machine["precision"]["precision"] == "fp32" and machine["threads"]["threads"] == 1


def test_a_resumed_runs_event_file_is_read_after_the_killed_runs(tmp_path: Path, monkeypatch) -> None:
    """TensorBoard reads a directory's event files in name order, and a resumed run's purge only hides what was
    read before it. Names of one process within one second differ by a counter that sorts wrongly from .9 to .10:
    the resumed run's file must still come last."""
    from tensorboard.summary.writer import event_file_writer

    from polymodal.train.metrics_log import MetricsLog

    monkeypatch.setattr(event_file_writer._global_uid, "_value", 9)  # the next two files: .9, then .10
    killed = MetricsLog(tmp_path)
    killed.write({"step": 1, "mse": 1.0})
    resumed = MetricsLog(tmp_path)
    resumed.rewind(0)
    resumed.write({"step": 1, "mse": 2.0})
    names = sorted(p.name for p in (tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(names) == 2 and names[-1].endswith(".10")


def test_an_interruption_says_whether_it_wrote_the_checkpoint_it_names(tmp_path: Path) -> None:
    from polymodal.train.trainer import TrainingInterrupted

    assert "; checkpoint saved; resume with" in str(TrainingInterrupted(tmp_path, 8, checkpointed=True))
    stands = str(TrainingInterrupted(tmp_path, 6, checkpointed=True, saved=False))  # Ctrl-C before a resumed step
    assert "; its checkpoint of step 6 stands; resume with" in stands


class FailsAt(MSETask):
    def forward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.calls + 1 == self.fail_at_call:
            self.calls += 1
            raise ValueError("no such thing")
        return super().forward(model, batch)


def test_evaluations_and_the_error_that_ends_a_run_are_in_train_log(tmp_path: Path, capsys) -> None:
    scores = iter([0.5, 0.25, 0.75])
    trainer = Trainer(
        Regression(),
        MSETask(),
        dataset(),
        config(steps=12, eval_every=4, metric="score"),
        tmp_path / "run",
        validate=lambda m: {"score": next(scores), "other": 1.0},
        progress=True,
    )
    trainer.fit()
    evals = [line for line in (tmp_path / "run" / "train.log").read_text().splitlines() if line.startswith("eval")]
    assert evals == [
        "eval 4/12  score 0.5  other 1 (best)",
        "eval 8/12  score 0.25  other 1",
        "eval 12/12  score 0.75  other 1 (best)",
    ]
    assert "eval 8/12  score 0.25  other 1" in capsys.readouterr().err  # the terminal says it too
    with pytest.raises(ValueError, match="no such thing"):
        train(tmp_path / "failed", objective=FailsAt(fail_at_call=5))
    log = (tmp_path / "failed" / "train.log").read_text()
    assert "stopped at step 4: ValueError: no such thing\nTraceback (most recent call last):" in log
