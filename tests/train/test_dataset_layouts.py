"""``polymodal train`` reads its splits in the layouts ``polymodal data check`` knows, not only manifests: class
folders (with UCF101-style split lists), ESC-50 folds, a validation share held out of train."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.config import ConfigError
from polymodal.data.errors import BadSampleLog
from polymodal.data.readers import write_shards
from polymodal.data.schema import Sample, ShardMember
from polymodal.fsutil import read_json_lines
from polymodal.train.prepare import hold_out, read_rows
from polymodal.train.recipe import load_recipe
from polymodal.train.run import data_fingerprint, run_recipe

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
IMAGE_RECIPE = [
    "model.preset=shapes-fusion",
    "model.params={source: image, text: false, image_encoder: cnn, fusion: concat}",
    "data.view=labels",
    "data.image.image_size=16",
    "objective.kind=classification",
    "objective.loss=null",
    "train.steps=4",
    "train.warmup_steps=0",
    "train.batch_size=8",
    "train.eval_every=4",
    "train.metric=accuracy",
    "train.tensorboard=false",
]


def class_folders(root: Path, per_class: int = 6, broken: int = 0) -> Path:
    """root/<colour>/<i>.png: plain colour squares with noise; ``broken`` files that are not images."""
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    for i in range(broken):
        (root / "red" / f"broken{i}.png").write_bytes(b"not a png")
    return root


def recipe(path: Path, *overrides: str):  # noqa: ANN201 - a Recipe
    return load_recipe("shapes-scene-checker", [f"data.path={path}", *IMAGE_RECIPE, *overrides])


def test_a_classifier_trains_on_class_folders_and_counts_their_bad_files(tmp_path: Path) -> None:
    data = tmp_path / "photos"
    class_folders(data / "train", broken=2)
    class_folders(data / "val", per_class=2)
    run = tmp_path / "run"
    result = run_recipe(recipe(data, "data.train=train", "data.val=val"), run, progress=False)
    assert result.step == 4 and result.best_metric is not None
    assert json.loads((run / "answers.json").read_text()) == {"blue": 0, "green": 1, "red": 2}
    assert result.bad_samples.total == 2  # the two broken files are counted, the run goes on
    said = (run / "train.log").read_text()
    assert f"data: train 20 rows ({data / 'train'}, imagefolder); val 6 rows ({data / 'val'}, imagefolder)" in said
    # The fingerprint is the folders' listing (names, sizes), not a manifest hash: a new photo changes it.
    before = data_fingerprint(recipe(data, "data.train=train", "data.val=val"))
    assert before["manifests"] == [str((data / "train").resolve()), str((data / "val").resolve())]
    Image.new("RGB", (16, 16), (200, 30, 30)).save(data / "train" / "red" / "new.png")
    assert data_fingerprint(recipe(data, "data.train=train", "data.val=val"))["hash"] != before["hash"]


def test_a_classifier_trains_on_webdataset_shards_read_from_the_shards_per_batch(tmp_path: Path) -> None:
    photos = class_folders(tmp_path / "photos", per_class=4)
    rows = [Sample(id=f"{p.parent.name}-{p.stem}", image=str(p), label=p.parent.name) for p in photos.rglob("*.png")]
    data = tmp_path / "shards"
    write_shards(sorted(rows, key=lambda row: row.id), str(data / "train-%d.tar"), max_count=6)
    write_shards(rows[:3], str(data / "val-%d.tar"))
    with tarfile.open(data / "train-9.tar", "w") as tar:  # a mislabelled member: counted, the run goes on
        info = tarfile.TarInfo("bad.png")
        info.size = 9
        tar.addfile(info, io.BytesIO(b"not a png"))
        label = tarfile.TarInfo("bad.cls")
        label.size = 1
        tar.addfile(label, io.BytesIO(b"1"))
    options = ["data.train=train-{0,1,9}.tar", "data.val=val-0.tar"]
    train, layout = read_rows(recipe(data, *options).data, "train", BadSampleLog())
    assert layout == "webdataset" and len(train) == 13
    assert all(isinstance(row.image, ShardMember) for row in train)  # the rows hold places, not the images
    run = tmp_path / "run"
    result = run_recipe(recipe(data, *options), run, progress=False)
    assert result.step == 4 and result.best_metric is not None
    assert result.bad_samples.total == 1
    (bad,) = read_json_lines(run / "bad_samples.jsonl")
    assert (bad["source"], bad["kind"]) == (str(data / "train-9.tar"), "not_an_image")


def test_split_lists_select_the_clips_of_each_split(tmp_path: Path) -> None:
    data = class_folders(tmp_path / "UCF", per_class=4)
    lists = tmp_path / "UCF" / "lists"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("".join(f"{c}/{i}.png\n" for c in COLOURS for i in range(3)))
    (lists / "testlist01.txt").write_text("".join(f"{c}/3.png\n" for c in COLOURS))
    options = [
        "data.train=.",
        "data.val=.",
        "data.train_options={split_list: lists/trainlist01.txt}",  # relative to data.path, as the splits are
        "data.val_options={split_list: lists/testlist01.txt}",
    ]
    train, layout = read_rows(recipe(data, *options).data, "train", BadSampleLog())
    val, _ = read_rows(recipe(data, *options).data, "val", BadSampleLog())
    assert layout == "imagefolder"
    assert (len(train), len(val)) == (9, 3)
    assert {row.id for row in val} == {f"{c}/3.png" for c in COLOURS}
    assert {row.label for row in train} == set(COLOURS)


def test_esc50_folds_and_reader_options_that_do_not_exist(tmp_path: Path) -> None:
    import soundfile as sf

    root = tmp_path / "ESC-50"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for i in range(6):
        name = f"{i % 3 + 1}-{i}-A-{i % 2}.wav"
        sf.write(root / "audio" / name, np.zeros(800, dtype=np.float32), 8000)
        rows.append(f"{name},{i % 3 + 1},{i % 2},{['dog', 'rain'][i % 2]},False,{i},A")
    (root / "meta" / "esc50.csv").write_text("\n".join(rows) + "\n")
    Image.new("RGB", (4, 4)).save(root / "esc50.gif")  # the repository's own picture: not a media folder
    base = [f"data.path={tmp_path}", "data.train=ESC-50", "data.val=ESC-50"]
    data = load_recipe("shapes-speaker", [*base, "data.train_options={folds: [1, 2]}", "data.val_options={folds: [3]}"])
    (train, layout), (val, _) = (read_rows(data.data, role, BadSampleLog()) for role in ("train", "val"))
    assert layout == "esc50"
    assert (len(train), len(val)) == (4, 2) and {row.label for row in val} == {"dog", "rain"}
    for options, why in (
        ("{split: train}", "unexpected keyword argument 'split'"),
        ("{folds: 1}", "not iterable"),
        ("{strict: true}", "strict is not a reader option here"),
    ):
        wrong = load_recipe("shapes-speaker", [*base, f"data.train_options={options}"])
        with pytest.raises(ConfigError, match=rf"data.train_options.*{why}"):
            read_rows(wrong.data, "train", BadSampleLog())


def test_a_validation_share_is_the_same_rows_whatever_their_order(tmp_path: Path) -> None:
    data = class_folders(tmp_path / "photos", per_class=20)
    rows, _ = read_rows(recipe(data, "data.train=.", "data.val_share=0.25").data, "train", BadSampleLog())
    train, val = hold_out(rows, 0.25)
    assert len(train) + len(val) == 60 and 5 <= len(val) <= 25
    again_train, again_val = hold_out(list(reversed(rows)), 0.25)
    assert {r.id for r in again_val} == {r.id for r in val} and not {r.id for r in train} & {r.id for r in val}
    # By class: 5 of each colour's 20; a class of 3 gives 0 or 1 and one of 1 stays in training; many small classes
    # still validate about their share; rows sharing an id stay on one side; unlabelled rows by the hash alone.
    train, val = hold_out(rows, 0.25, by_class=True)
    assert Counter(r.label for r in val) == {"red": 5, "blue": 5, "green": 5}
    assert {r.id for r in hold_out(list(reversed(rows)), 0.25, by_class=True)[1]} == {r.id for r in val}
    rare = [*rows, *(Sample(id=f"rare{i}", label="rare") for i in range(3)), Sample(id="once", label="once")]
    counts = Counter(r.label for r in hold_out(rare, 0.25, by_class=True)[1])
    assert counts["once"] == 0 and counts["rare"] <= 1 and counts["red"] == 5
    small = [Sample(id=f"{c}-{i}", label=c) for c in range(100) for i in range(5)]
    held = Counter(r.label for r in hold_out(small, 0.1, by_class=True)[1])
    assert 35 <= sum(held.values()) <= 65 and set(held.values()) == {1}
    twice = [Sample(id=f"{i // 2}", label="a", source=str(i % 2)) for i in range(40)]
    _, val = hold_out(twice, 0.5, by_class=True)
    assert len(val) == 20 and all(Counter(r.id for r in val)[r.id] == 2 for r in val)
    mixed = [*rows, Sample(id="no label")]
    assert Counter(r.label for r in hold_out(mixed, 0.25, by_class=True)[1])["red"] == 5
    # An id with rows of two classes goes by its hash, so a class of two keeps a row to train on; the classes' draws
    # do not depend on the rows' order even when labels compare equal (1 and 1.0).
    shared = [Sample(id="x", label="a"), Sample(id="x", label="b"), Sample(id="y", label="b"), *rows]
    for share in (0.25, 0.5, 0.9):
        train, _ = hold_out(shared, share, by_class=True)
        assert {"red", "green", "blue", "b"} <= {r.label for r in train}
    ones = [Sample(id=f"n{i}", label=1.0 if i % 2 else 1) for i in range(30)]
    assert {r.id for r in hold_out(ones, 0.25, by_class=True)[1]} == {
        r.id for r in hold_out(list(reversed(ones)), 0.25, by_class=True)[1]
    }
    numbers = [Sample(id=str(i), label=i / 7) for i in range(400)]
    assert 70 <= len(hold_out(numbers, 0.25)[1]) <= 130
    with pytest.raises(ConfigError, match="leaves .* to validate"):
        hold_out(rows[:1], 0.25)
    with pytest.raises(ConfigError, match="set val: null, or drop val_share"):
        recipe(data, "data.train=.", "data.val=val.jsonl", "data.val_share=0.25")


def test_clear_errors_for_splits_that_are_not_there_or_not_datasets(tmp_path: Path) -> None:
    data = class_folders(tmp_path / "photos")
    for missing in ("missing", "missing.jsonl"):
        with pytest.raises(ConfigError, match=rf"data.train: .*/photos/{missing}: no such file or folder"):
            read_rows(recipe(data, f"data.train={missing}").data, "train", BadSampleLog())
    with pytest.raises(ConfigError, match="is a plain folder of media files, without labels or captions"):
        read_rows(recipe(data, "data.train=red").data, "train", BadSampleLog())
    with pytest.raises(ConfigError, match=r"label_key picks an entry of a manifest's dict labels; .*\(imagefolder\)"):
        read_rows(recipe(data, "data.train=.", "data.label_key=colour").data, "train", BadSampleLog())
    (data / "notes.jsonl").write_text('{"image": "red/0.png", "label": "red"}\n')
    manifest = recipe(data, "data.train=notes.jsonl", "data.train_options={folds: [1]}")
    with pytest.raises(ConfigError, match="is a manifest, which takes no reader options"):
        read_rows(manifest.data, "train", BadSampleLog())
    with pytest.raises(ConfigError, match=r"data.train: .*photos: directory holds manifests \(notes.jsonl\)"):
        read_rows(recipe(data, "data.train=.").data, "train", BadSampleLog())


def test_validation_share_and_same_splits_in_a_run_and_home_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = class_folders(tmp_path / "photos", per_class=10)
    shared = run_recipe(recipe(data, "data.train=.", "data.val_share=0.3"), tmp_path / "shared", progress=False)
    assert shared.best_metric is not None  # validated on the held-out rows
    said = (tmp_path / "shared" / "train.log").read_text()
    assert re.search(r"data: train 30 rows \(.*photos, imagefolder\); \d+ of them held out to validate", said)
    same = tmp_path / "same"
    run_recipe(recipe(data, "data.train=.", "data.val=."), same, progress=False)
    assert "warning: data.val reads the same rows as data.train" in (same / "train.log").read_text()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert recipe("~/photos", "data.train=.").data.path == str(data)


def test_manifest_runs_keep_their_fingerprint(tmp_path: Path) -> None:
    """A run started before other layouts hashed its manifests alone: resumed now, it must hash the same."""
    from polymodal.fsutil import data_hash

    (tmp_path / "train.jsonl").write_text('{"image": "a.png", "label": "red"}\n')
    (tmp_path / "val.jsonl").write_text('{"image": "b.png", "label": "red"}\n')
    fingerprint = data_fingerprint(recipe(tmp_path, "data.train=train.jsonl", "data.val=val.jsonl"))
    assert fingerprint["hash"] == data_hash([tmp_path / "train.jsonl", tmp_path / "val.jsonl"], tmp_path)
