"""Result files and run directories built in tmp_path: tiny Pillow images, no downloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 70), "blue": (40, 80, 220)}


def write_images(folder: Path) -> dict[str, Path]:
    """One small solid-colour PNG per class (200x100, so the thumbnail has to shrink it)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rgb in COLOURS.items():
        path = folder / f"{name}.png"
        Image.new("RGB", (200, 100), rgb).save(path)
        paths[name] = path
    return paths


def result_document(
    images: dict[str, Path], accuracy: float = 0.75, model: str = "runs/a/model", **overrides: Any
) -> dict[str, Any]:
    """A complete result file with every optional part filled in."""
    classify = {
        "benchmark": "shapes-classify",
        "split": "test",
        "headline": "accuracy",
        "metrics": {"accuracy": accuracy, "macro_f1": accuracy - 0.05, "mean_rank": 123.4},
        "ci95": {"accuracy": [accuracy - 0.04, accuracy + 0.03]},
        "details": {
            "confusion": {"classes": ["red", "green", "blue"], "matrix": [[8, 1, 1], [2, 7, 1], [0, 1, 9]]},
            "per_class": {"red": 0.8, "green": 0.7, "blue": 0.9},
        },
        "robustness": {
            "metric": "accuracy",
            "missing_modality": {"none": accuracy, "image": 0.4, "text": accuracy - 0.1},
            "corruptions": {
                k: {"0": accuracy, "1": accuracy - 0.1, "2": accuracy - 0.25}
                for k in ("gaussian_noise", "blur", "jpeg")
            },
            "adversarial": {"0": accuracy, "0.00392157": accuracy - 0.2, "0.0156863": accuracy - 0.5},
            "attack": "PGD-10 on the L-inf ball",
        },
        "examples": [
            {
                "image": str(images["red"]),
                "text": "a red square",
                "prediction": "red",
                "reference": "red",
                "correct": True,
            },
            {
                "image": str(images["green"]),
                "text": "<script>alert(1)</script> | pipe",
                "prediction": "blue",
                "reference": "green",
                "correct": False,
            },
            {"image": "/nonexistent/missing.png", "prediction": "red", "reference": "blue", "correct": False},
        ],
    }
    retrieval = {
        "benchmark": "shapes-retrieval",
        "split": "test",
        "headline": "i2t_R@1",
        "metrics": {"i2t_R@1": accuracy / 2, "t2i_R@1": accuracy / 3},
        "details": {
            "recall_at_k": {
                "i2t": {"1": accuracy / 2, "5": 0.6, "10": 0.8},
                "t2i": {"1": accuracy / 3, "5": 0.5, "10": 0.7},
            }
        },
        "examples": [
            {
                "text": "a blue circle",
                "retrieved": [
                    {"image": str(images["blue"]), "score": 0.91},
                    {"image": str(images["red"]), "score": 0.42},
                ],
            }
        ],
    }
    vqa = {
        "benchmark": "shapes-vqa",
        "split": "test_novel",
        "headline": "vqa_accuracy",
        "metrics": {"vqa_accuracy": accuracy - 0.2},
        "details": {"per_question_type": {"color": 0.7, "shape": 0.5, "count": 0.3}},
    }
    doc = {
        "polymodal_eval": 1,
        "provenance": {
            "model": model,
            "model_hash": "abcdef0123456789" * 4,
            "data": {"path": "data/shapes/test.jsonl", "hash": "0011223344556677" * 4},
            "versions": {"polymodal": "0.1.0", "torch": "2.13.0"},
            "seed": 0,
            "command": f"polymodal eval {model}",
            "created": "2026-11-22T09:00:00Z",
        },
        "results": [classify, retrieval, vqa],
        "future_key": {"ignored": True},
    }
    doc.update(overrides)
    return doc


def write_result(folder: Path, doc: dict[str, Any], name: str = "eval.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(doc, indent=1))
    return path


def write_training(folder: Path, slope: float = 1.0, preset: str = "fusion-concat") -> Path:
    """What ``polymodal train`` leaves: metrics.jsonl (steps + evals), config.yaml, train_summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(10, 110, 10):
        lines.append(
            {"step": step, "lr": 1e-3, "samples_per_s": 300.0, "loss": 2.0 - slope * step / 100, "grad_norm": 1.0}
        )
        if step % 50 == 0:
            lines.append({"step": step, "eval": {"accuracy": slope * step / 200}})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + '\n{"step": 11')  # truncated tail
    (folder / "config.yaml").write_text(
        f"name: {folder.name}\nmodel: {{preset: {preset}, params: {{}}}}\nobjective: {{kind: classification}}\n"
        "train: {steps: 100, batch_size: 32, lr: 0.001}\n"
    )
    (folder / "train_summary.json").write_text(
        json.dumps(
            {
                "steps": 100,
                "stopped_early": False,
                "best_metric": slope / 2,
                "best_step": 100,
                "samples_per_second": 301.5,
                "last_losses": {"loss": 2.0 - slope},
                "bad_samples": 0,
            }
        )
    )
    return folder


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return write_images(tmp_path / "images")
