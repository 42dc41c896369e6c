"""The examples of the shapes-video-* suites carry each clip's absolute path (``video``), beside the texts they show,
and keep it through the result file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polymodal.evaluate.results import ResultFile, dump_results, load_results
from polymodal.evaluate.runner import run_eval

# The tiny ShapesWorld-moves data and untrained video models of the video benchmark tests, found by name.
from tests.evaluate.test_video_benchmarks import moves, video_models  # noqa: F401

SUITES = {
    "shapes-video-retrieval": "clip",
    "shapes-video-caption": "caption",
    "shapes-video-action": "action",
    "shapes-video-statements": "statements",
}


def _clips(data: Path) -> list[str]:
    """The test split's clips in row order, as absolute paths."""
    return [
        str((data / json.loads(line)["video"]).resolve()) for line in (data / "test.jsonl").read_text().splitlines()
    ]


@pytest.mark.parametrize("suite", SUITES)
def test_examples_name_their_clips(suite: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    data, model = request.getfixturevalue("moves"), request.getfixturevalue("video_models")[SUITES[suite]]
    doc = run_eval(str(model), suite, data=data, splits=["test"], n_resamples=10)
    (result,) = doc.results
    clips = _clips(data)
    assert result.examples and all(e.video in clips for e in result.examples)
    assert all(e.image is None and e.audio is None for e in result.examples)
    if suite == "shapes-video-statements":  # several statements per clip, in row order
        assert result.examples[0].video == clips[0] and result.examples[0].text
    else:  # one example per clip, in row order
        assert [e.video for e in result.examples] == clips[: len(result.examples)]
    if suite == "shapes-video-retrieval":  # clips retrieve captions: the retrieved items are texts
        assert all(r.text and r.video is None for r in result.examples[0].retrieved or [])
    loaded = load_results(dump_results(doc, tmp_path / "eval.json"))
    assert [e.video for e in loaded.results[0].examples] == [e.video for e in result.examples]


def test_a_retrieved_clip_round_trips(tmp_path: Path) -> None:
    doc = {
        "polymodal_eval": 1,
        "provenance": {"model": "m", "model_hash": "h", "data": {"path": "d", "hash": "h"}},
        "results": [
            {
                "benchmark": "b",
                "split": "test",
                "headline": "r",
                "metrics": {"r": 1.0},
                "examples": [{"text": "a shape grows", "retrieved": [{"video": "/clips/a.mp4", "score": 0.5}]}],
            }
        ],
    }
    written = dump_results(ResultFile.model_validate(doc), tmp_path / "eval.json")
    assert json.loads(written.read_text())["results"][0]["examples"][0]["retrieved"] == [
        {"video": "/clips/a.mp4", "score": 0.5}
    ]
    assert load_results(written).results[0].examples[0].retrieved[0].video == "/clips/a.mp4"
