"""A small table predictor fitted here in seconds (``polymodal fit``'s ``TablePredictor``): a numeric, a categorical, a
text and an image column, each carrying part of the label. Shared by the api and serve tests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.fit import TablePredictor, read_table
from polymodal.fit.network import Candidate
from polymodal.fit.store import FeatureStore

REVIEWS = {
    "good": ["the staff were friendly and quick", "a lovely quiet room with a view", "great breakfast and kind hosts"],
    "bad": ["the room was dirty and loud", "rude staff and a broken shower", "cold food and a long wait"],
}
PHOTOS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
FAST = (Candidate("concat", {"hidden_dim": 32}, 32),)


def write_photos(folder: Path) -> dict[str, Path]:
    """One 32 px PNG per colour in ``folder/photos``."""
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rgb in PHOTOS.items():
        paths[name] = folder / "photos" / f"{name}.png"
        Image.fromarray(np.full((32, 32, 3), rgb, np.uint8)).save(paths[name])
    return paths


def table_rows(n: int, seed: int) -> list[dict]:
    """ "yes" when x, a good review, a red photo and the colour green together pass 0: no column decides alone."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        x, tone, photo = float(rng.normal()), str(rng.choice(list(REVIEWS))), str(rng.choice(list(PHOTOS)))
        colour = str(rng.choice(["red", "green", "blue"]))
        score = (
            x
            + (1.2 if tone == "good" else -1.2)
            + (0.8 if photo == "red" else -0.8)
            + (0.6 if colour == "green" else 0)
        )
        review = str(rng.choice(REVIEWS[tone]))
        rows.append(
            {
                "x": round(x, 3),
                "colour": colour,
                "review": review,
                "photo": f"photos/{photo}.png",
                "label": "yes" if score > 0 else "no",
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def fit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved predictor directory (fit.json, model.safetensors, report.html) beside its table and photos."""
    folder = tmp_path_factory.mktemp("fitted")
    write_photos(folder)
    table = read_table(write_csv(folder / "train.csv", table_rows(240, 0)))
    store = FeatureStore(folder / "features.sqlite")  # the towers then see each photo and review about once
    predictor = TablePredictor.fit(table, "label", time_limit=15, candidates=FAST, store=store)
    return predictor.save(folder / "predictor")
