"""A ``polymodal fit`` directory behind the :class:`~polymodal.backends.Backend` contract, so ``polymodal.load``, the
CLI and the server take a fitted table predictor like any model: it can ``predict`` and refuses every other task."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import torch

from polymodal.backends import PREDICT, TaskNotSupported
from polymodal.fit.predictor import FIT_FILE, TOWERS_FILE, WEIGHTS_FILE
from polymodal.fsutil import hash_files
from polymodal.hardware import PrecisionChoice

if TYPE_CHECKING:
    from PIL import Image

    from polymodal.data.errors import BadSampleLog
    from polymodal.fit import Predictions, Table, TablePredictor

# The features it was trained on were computed in fp32; autocast would feed the network something else.
FP32 = PrecisionChoice("auto", "fp32", "a fitted predictor runs in fp32, the precision its features were made in")
PREDICTOR_FILES = (FIT_FILE, WEIGHTS_FILE, TOWERS_FILE)  # what its predictions depend on: its identity
TOWER_KINDS = ("image", "audio", "video", "text")  # column kinds read by a pretrained tower


class PredictorBackend:
    """A :class:`~polymodal.fit.TablePredictor` loaded from its directory; it runs on the CPU, in fp32."""

    capabilities = frozenset({PREDICT})
    embed_dim = None
    precision_choice = FP32

    def __init__(self, predictor: TablePredictor, directory: str | os.PathLike[str]) -> None:
        path = Path(directory).resolve()
        self.predictor = predictor
        self.store = True  # the default feature store, as the CLI's; False: the towers run on every file
        self.name = f"fit:{Path(directory)}"
        self.source = str(path)
        self.identity = hash_files([path / name for name in PREDICTOR_FILES if (path / name).is_file()], root=path)
        used = {c.kind for c in predictor.columns}
        self.media = {PREDICT: frozenset(k for k in TOWER_KINDS if k in used)}

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> PredictorBackend:
        from polymodal.fit import TablePredictor

        return cls(TablePredictor.load(directory), directory)

    def predict(
        self, rows: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]], bad_log: BadSampleLog | None = None
    ) -> Predictions:
        # Quiet, like every other Model task (and the server's); the towers' features go through the CLI's store.
        return self.predictor.predict(rows, bad_log, store=self.store, progress=False)

    def evaluate(self, rows: Table | str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The predictor's metrics on labelled rows: :meth:`~polymodal.fit.TablePredictor.evaluate`."""
        return self.predictor.evaluate(rows, store=self.store)

    def to(self, device: str | torch.device) -> PredictorBackend:
        if torch.device(device).type != "cpu":
            raise ValueError(f"{self.name}: a fitted predictor runs on the CPU, not on {device}")
        return self

    def _refuse(self, task: str) -> NoReturn:
        raise TaskNotSupported(self, task)

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        self._refuse("embed text")

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        self._refuse("embed images")

    def caption(self, images: Sequence[Image.Image], *, max_new_tokens: int = 30, num_beams: int = 1) -> list[str]:
        self._refuse("caption")

    def answer(self, images: Sequence[Image.Image], questions: Sequence[str]) -> list[str]:
        self._refuse("answer questions")

    def generate(
        self,
        texts: Sequence[str],
        *,
        num_per_text: int,
        steps: int,
        guidance: float,
        seed: int | Sequence[int],
        sampler: str,
    ) -> list[Image.Image]:
        self._refuse("generate images")
