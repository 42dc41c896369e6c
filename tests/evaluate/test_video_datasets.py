"""The real-data video suites on tiny fake datasets in the real layouts: MSR-VTT 1k-A (``MSRVTT_JSFUSION_test.csv``,
``videos/all/``) and UCF101 (``UCF-101/<Class>/*.avi``, ``ucfTrainTestlist/``), each scored for an image-text model
(clips by its image tower per frame) and a model with a video tower, against references computed with the API."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

import polymodal
from polymodal.data.errors import BadSampleError
from polymodal.evaluate.probe import probe_predictions
from polymodal.evaluate.prompts import HUMAN_ACTION_TEMPLATES
from polymodal.evaluate.runner import run_eval
from tests.api.video_model import (  # noqa: F401
    FPS,
    SIZE,
    colour_model_dir,
    colour_video_model_dir,
    picture,
    write_clip,
)

av = pytest.importorskip("av")

MODELS = ["colour_model_dir", "colour_video_model_dir"]  # by frames, by a video tower


def write_avi(path: Path, colour: str, seed: int) -> Path:
    """A one-second AVI (MPEG-4 part 2), as UCF101 ships its clips."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for i in range(FPS):
            out.mux(stream.encode(av.VideoFrame.from_image(picture(colour, seed=seed + i))))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def msrvtt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("msrvtt")
    rows = []
    # Distinct clips (i red frames, then blue ones) and distinct sentences: no tied similarities.
    sentences = ["a red picture", "a blue picture", "red", "blue", "a picture", "picture"]
    for i, sentence in enumerate(sentences):
        video_id = f"video{7010 + i}"
        write_clip(root / "videos" / "all" / f"{video_id}.mp4", ["red"] * (i + 1) + ["blue"] * (7 - i), 1 / FPS)
        rows.append({"key": f"ret{i}", "vid_key": f"msr{7010 + i}", "video_id": video_id, "sentence": sentence})
    with open(root / "MSRVTT_JSFUSION_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["key", "vid_key", "video_id", "sentence"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def _ranks(sims: np.ndarray) -> np.ndarray:
    """1-based rank of each query's own item (the diagonal) among all items: 1 + how many score strictly higher."""
    return 1 + (sims > np.diag(sims)[:, None]).sum(axis=1)


@pytest.mark.parametrize("model_dir", MODELS)
def test_msrvtt_retrieval_both_ways_with_median_rank(msrvtt_dir: Path, model_dir: str, request) -> None:  # noqa: ANN001
    path = request.getfixturevalue(model_dir)
    (result,) = run_eval(str(path), "msrvtt", data=msrvtt_dir, n_resamples=20).results
    rows = list(csv.DictReader((msrvtt_dir / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()))
    model = polymodal.load(path, precision="fp32")
    clips = model.embed_video([str(msrvtt_dir / "videos" / "all" / f"{r['video_id']}.mp4") for r in rows])
    texts = model.embed_text([r["sentence"] for r in rows])
    t2v, v2t = _ranks(texts @ clips.T), _ranks(clips @ texts.T)
    assert result.split == "test" and result.headline == "t2v_R@1"
    for direction, ranks in (("t2v", t2v), ("v2t", v2t)):
        for k in (1, 5, 10):
            assert result.metrics[f"{direction}_R@{k}"] == pytest.approx(np.mean(ranks <= k)), (direction, k)
        assert result.metrics[f"{direction}_median_rank"] == pytest.approx(np.median(ranks)), direction
    with pytest.raises(ValueError, match="msrvtt has the split test, not 'train'"):
        run_eval(str(path), "msrvtt", data=msrvtt_dir, splits=["train"])


CLASSES = ["BluePicture", "RedPicture"]  # classInd.txt's order


@pytest.fixture(scope="module")
def ucf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """UCF101's layout: UCF-101/<Class>/v_<Class>_gNN_c01.avi, ucfTrainTestlist/ with classInd.txt, trainlist01.txt
    (groups 1-3, with class numbers) and testlist01.txt (groups 4-5)."""
    root = tmp_path_factory.mktemp("ucf101")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(CLASSES, start=1)))
    train, test = [], []
    for number, name in enumerate(CLASSES, start=1):
        colour = "blue" if name.startswith("Blue") else "red"
        for group in range(1, 6):
            rel = f"{name}/v_{name}_g{group:02d}_c01.avi"
            write_avi(root / "UCF-101" / rel, colour, seed=10 * group + number)
            (train if group <= 3 else test).append(f"{rel} {number}" if group <= 3 else rel)
    (lists / "trainlist01.txt").write_text("\n".join(train) + "\n")
    (lists / "testlist01.txt").write_text("\n".join(test) + "\n")
    return root


def _listed(root: Path, name: str) -> tuple[list[str], list[int]]:
    lines = (root / "ucfTrainTestlist" / name).read_text().split("\n")
    rels = [line.split()[0] for line in lines if line.strip()]
    return [str(root / "UCF-101" / r) for r in rels], [CLASSES.index(r.split("/")[0]) for r in rels]


@pytest.mark.parametrize("model_dir", MODELS)
def test_ucf101_zero_shot_and_linear_probe_on_split_1(ucf_dir: Path, model_dir: str, request) -> None:  # noqa: ANN001
    path = request.getfixturevalue(model_dir)
    (result,) = run_eval(str(path), "ucf101", data=ucf_dir, n_resamples=20).results
    model = polymodal.load(path, precision="fp32")
    test_clips, truth = _listed(ucf_dir, "testlist01.txt")
    train_clips, train_truth = _listed(ucf_dir, "trainlist01.txt")
    words = ["blue picture", "red picture"]  # the class names de-camel-cased
    ranked = model.classify(test_clips, words, modality="video", templates=HUMAN_ACTION_TEMPLATES)
    predicted = [words.index(r[0][0]) for r in ranked]
    assert result.split == "split1" and result.headline == "accuracy"
    assert result.details.confusion.classes == words
    assert result.metrics["accuracy"] == pytest.approx(np.mean(np.equal(predicted, truth)))
    probe = probe_predictions(
        torch.from_numpy(model.embed_video(train_clips)),
        torch.tensor(train_truth),
        torch.from_numpy(model.embed_video(test_clips)),
        len(CLASSES),
    )
    assert result.metrics["probe_accuracy"] == pytest.approx(np.mean(probe.numpy() == np.array(truth)))
    assert result.metrics["probe_accuracy"] == 1.0  # solid colours: the probe separates them
    assert result.examples[0].video.endswith(".avi")


def test_ucf101_without_a_train_list_scores_zero_shot_only(
    ucf_dir: Path, colour_model_dir: Path, tmp_path: Path
) -> None:  # noqa: F811
    import shutil

    root = tmp_path / "ucf101"
    shutil.copytree(ucf_dir, root)
    (root / "ucfTrainTestlist" / "trainlist01.txt").unlink()
    (result,) = run_eval(str(colour_model_dir), "ucf101", data=root, n_resamples=20).results
    assert "accuracy" in result.metrics and "probe_accuracy" not in result.metrics
    with open(root / "ucfTrainTestlist" / "testlist01.txt", "a") as f:
        f.write("RedPicture/v_RedPicture_g09_c01.avi\n")  # listed, never shipped
    with pytest.raises(
        BadSampleError,
        match=r"testlist01.txt, row 5, field .video.: RedPicture/v_RedPicture_g09_c01.avi: no such file",
    ):
        run_eval(str(colour_model_dir), "ucf101", data=root)
    with pytest.raises(ValueError, match="ucf101 has the splits split1, split2, split3, not 'test'"):
        run_eval(str(colour_model_dir), "ucf101", data=root, splits=["test"])


def test_video_suites_refuse_a_model_that_embeds_no_clips(msrvtt_dir: Path, ucf_dir: Path, tmp_path: Path) -> None:
    from tests.tiny_models import save_tiny_model

    captioner = save_tiny_model("captioner", tmp_path / "captioner")
    for name, data in (("msrvtt", msrvtt_dir), ("ucf101", ucf_dir)):
        with pytest.raises(ValueError, match=f"benchmark {name} needs a model that can embed"):
            run_eval(str(captioner), name, data=data)
