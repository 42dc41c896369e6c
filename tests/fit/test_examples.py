"""The issue's worked examples on ShapesWorld (made here, with eSpeak NG speech): spoken sentiment from words and
voice, speaker identity from a pretrained voice encoder, few-shot identities on images, statements as a table."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from polymodal.data.shapes import generate_shapesworld, load_split
from polymodal.fit import TablePredictor, rows_table
from polymodal.fit.store import FeatureStore

pytestmark = pytest.mark.skipif(not importlib.util.find_spec("espeakng_loader"), reason="needs polymodal[speech]")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    generate_shapesworld(out, 400, seed=0, image_size=64, workers=2, progress=False, speech=True)
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    return FeatureStore(tmp_path_factory.mktemp("cache") / "features.sqlite")


def _rows(shapes: Path, view: str, split: str, keep: tuple[str, ...]) -> list[dict]:
    return [{k: row[k] for k in keep} for row in map(dict, _raw(shapes, view, split))]


def _raw(shapes: Path, view: str, split: str) -> list[dict]:
    return [json.loads(line) for line in (shapes / f"{view}{split}.jsonl").read_text().splitlines()]


def test_spoken_sentiment_needs_words_and_voice(shapes: Path, store: FeatureStore) -> None:
    keep = ("text", "audio", "label")  # the generator's other columns (words, delivery, voice ...) give it away
    train = rows_table(_rows(shapes, "sentiment_", "train", keep), shapes)
    val = rows_table(_rows(shapes, "sentiment_", "val", keep) + _rows(shapes, "sentiment_", "test", keep), shapes)
    predictor = TablePredictor.fit(train, "label", val=val, time_limit=60, store=store)
    assert {c.name: c.kind for c in predictor.columns} == {"text": "text", "audio": "audio"}
    fused = predictor.summary["validation"]["accuracy"]
    alone = {b["inputs"][0]: b["metrics"]["accuracy"] for b in predictor.summary["baselines"]}
    assert fused >= 0.85 and fused > max(alone.values()) + 0.05, (fused, alone)
    assert alone["text"] < 0.7  # the words alone are a coin flip: sarcasm flips half of them


def test_speaker_identity_from_the_pretrained_voice_encoder(shapes: Path, store: FeatureStore) -> None:
    keep = ("audio", "label")
    train = rows_table(_rows(shapes, "speech_", "train", keep), shapes)
    val = rows_table(_rows(shapes, "speech_", "val", keep) + _rows(shapes, "speech_", "test", keep), shapes)
    predictor = TablePredictor.fit(train, "label", val=val, time_limit=40, store=store)
    assert predictor.problem.kind == "multiclass" and len(predictor.problem.classes) == 8
    assert predictor.summary["validation"]["accuracy"] >= 0.8


def _single_objects(shapes: Path, split: str) -> list[dict]:
    rows = [r for r in load_split(shapes, split) if len(r["objects"]) == 1]
    return [{"image": r["image"], "label": r["objects"][0]["shape"]} for r in rows]


def test_few_shot_identities_on_images(shapes: Path, store: FeatureStore) -> None:
    """Five pictures per identity (here a shape, in any colour, size and place) and pretrained image features
    recognise new pictures of it."""
    pool = _single_objects(shapes, "train") + _single_objects(shapes, "val")
    counts = Counter(r["label"] for r in pool)
    identities = sorted(label for label, n in counts.items() if n >= 6)[:6]
    assert len(identities) >= 4
    train, val = [], []
    for identity in identities:
        members = [r for r in pool if r["label"] == identity]
        train += members[:5]
        val += members[5:]
    predictor = TablePredictor.fit(
        rows_table(train, shapes), "label", val=rows_table(val, shapes), time_limit=30, store=store
    )
    chance = 1 / len(identities)
    assert predictor.summary["validation"]["accuracy"] >= 2.5 * chance


@pytest.mark.slow
def test_statements_as_a_table(shapes: Path, store: FeatureStore) -> None:
    def table(split: str) -> list[dict]:
        return [
            {"image": r["image"], "statement": s["text"], "label": str(s["label"]).lower()}
            for r in load_split(shapes, split)
            for s in r["statements"][:2]
        ]

    predictor = TablePredictor.fit(
        rows_table(table("train"), shapes),
        "label",
        val=rows_table(table("val") + table("test"), shapes),
        time_limit=120,
        store=store,
    )
    fused = predictor.summary["validation"]["accuracy"]
    alone = max(b["metrics"]["accuracy"] for b in predictor.summary["baselines"])
    assert fused > alone, (fused, alone)
