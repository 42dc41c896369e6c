"""Where training metrics go: ``metrics.jsonl`` always, TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from polymodal.fsutil import write_atomic

logger = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"


def _scalars(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten ``{"eval": {"recall@1": 0.3}}`` to ``{"eval/recall@1": 0.3}``, numbers only."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "step":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class MetricsLog:
    """Append-only JSONL (the record of truth: resumable, greppable) plus TensorBoard scalars for viewing."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.run_dir = run_dir
        self._want_tensorboard = tensorboard
        self._writer: Any = None
        self._purge_step: int | None = None

    def rewind(self, step: int) -> None:
        """Forget what was logged after ``step``: a run resumed from its checkpoint at ``step`` logs those steps again.

        ``metrics.jsonl`` keeps the records up to ``step`` (rewritten atomically; a line cut short by the kill is
        dropped); TensorBoard hides the later events when this run first writes (``purge_step``).
        """
        if self.path.is_file():
            kept = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and int(record.get("step", 0)) <= step:
                    kept.append(line + "\n")
            write_atomic(self.path, "".join(kept))
        self._purge_step = step + 1

    def _tensorboard(self) -> Any:
        if self._writer is None and self._want_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info(
                    "tensorboard is not installed: metrics go to metrics.jsonl only "
                    "(pip install 'polymodal[tensorboard]' for event files)"
                )
                self._want_tensorboard = False
                return None
            if self._purge_step is not None:
                _after_existing_event_files(self.run_dir / TENSORBOARD_DIR)
            self._writer = SummaryWriter(log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=self._purge_step)
        return self._writer

    def write(self, record: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        writer = self._tensorboard()
        if writer is not None:
            for name, value in _scalars(record).items():
                writer.add_scalar(name, value, global_step=int(record["step"]))
            writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _after_existing_event_files(directory: Path) -> None:
    """Wait (under a second) until the clock is past the newest event file's timestamp: TensorBoard reads the
    files of a directory in name order, and a resumed run's purge only hides what was read before it. Within one
    second the names of one process differ by a counter, which sorts wrongly from .9 to .10."""
    stamps = [
        int(p.name.split(".")[3]) for p in directory.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()
    ]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.02)
