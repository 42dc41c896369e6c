"""Run by test_distributed.py under ``accelerate launch`` (and once in-process as reference):
a toy dual encoder trained with the CLIP loss; writes its final weights to ARGV[1]. With ARGV[2] ==
"negatives" every other sample also has a hard negative caption (gathered across processes too).

Interruptions (environment): ``DDP_SIGNAL_AT=RANK:CALL`` sends that rank SIGINT during its CALL-th objective call
(a signal one rank got mid-step); ``DDP_MARK_AT=CALL`` has rank 0 write ``marked`` beside ARGV[1] during that call
and wait there, for the test to press Ctrl-C on the whole launch. An interrupted rank writes
``interrupted-rank<R>.json`` (step, checkpointed) and exits 130; ``DDP_RESUME=1`` resumes the run."""

import atexit
import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from polymodal.modules.losses import ClipLoss
from polymodal.train.config import TrainConfig
from polymodal.train.trainer import Trainer, TrainingInterrupted, end_distributed, exit_launched_process


class Towers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(6, 8)
        self.text = nn.Linear(5, 8)


class Objective(nn.Module):
    def __init__(self, marks: Path) -> None:
        super().__init__()
        self.loss = ClipLoss()
        self.calls, self.marks = 0, marks
        rank, _, call = os.environ.get("DDP_SIGNAL_AT", ":").partition(":")
        self.signal_at = int(call) if rank == os.environ.get("RANK") else None
        mark = os.environ.get("DDP_MARK_AT")
        self.mark_at = int(mark) if mark and os.environ.get("RANK") == "0" else None

    def forward(self, model: Towers, batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == self.signal_at:
            signal.raise_signal(signal.SIGINT)
        if self.calls == self.mark_at:
            (self.marks / "marked").touch()
            time.sleep(5)  # the test's Ctrl-C lands in this step
        if len(batch) == 2:
            images, texts = batch
            return {"loss": self.loss(model.image(images), model.text(texts))}
        images, texts, negatives, present = batch
        # As ContrastiveObjective does: captions and negatives through the text tower in one call.
        encoded_texts, encoded_negatives = model.text(torch.cat([texts, negatives])).split(len(texts))
        return {"loss": self.loss(model.image(images), encoded_texts, encoded_negatives, present)}


def main(out: str, negatives: bool = False) -> None:
    # A hung rank prints every thread's stack and exits instead of hanging the test (see test_distributed.py).
    faulthandler.dump_traceback_later(120, exit=True)
    # Leaves a mark if the interpreter's teardown runs: a launched rank must skip it (exit_launched_process).
    rank = os.environ.get("RANK")
    atexit.register(lambda: (Path(out).parent / f"atexit-{'single' if rank is None else 'rank' + rank}").touch())
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(64, 6, generator=g), torch.randn(64, 5, generator=g)]
    if negatives:
        tensors += [torch.randn(64, 5, generator=g), torch.arange(64) % 2 == 0]
    data = TensorDataset(*tensors)
    torch.manual_seed(0)
    model = Towers()
    # No regular checkpoint before the last step: the one an interruption writes is the one the tests look for.
    cfg = TrainConfig(steps=10, batch_size=16, lr=1e-2, grad_clip=None, seed=1, log_every=5, checkpoint_every=10)
    marks = Path(out).parent
    trainer = Trainer(model, Objective(marks), data, cfg, marks / "run", progress=False)
    if os.environ.get("DDP_RESUME"):
        trainer.resume()
    try:
        trainer.fit()
    except TrainingInterrupted as stop:
        record = {"step": stop.step, "checkpointed": stop.checkpointed, "signum": stop.signum}
        (marks / f"interrupted-rank{rank}.json").write_text(json.dumps(record))
        faulthandler.cancel_dump_traceback_later()
        exit_launched_process(130)
    if trainer.is_main:
        state = {k: v.detach().contiguous() for k, v in trainer.module.state_dict().items()}
        save_file(state, out, metadata={"world_size": str(trainer.accelerator.num_processes)})
    launched = end_distributed()
    faulthandler.cancel_dump_traceback_later()
    if launched:  # as `polymodal train` does: without it, about one loaded run in ten aborted in teardown
        exit_launched_process(0)


if __name__ == "__main__":
    main(sys.argv[1], negatives=sys.argv[2:] == ["negatives"])
