"""``polymodal generate`` through the real typer app, against the Python API it wraps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import polymodal
from polymodal.cli.generate import CONTACT_SHEET, GAP, LABEL_HEIGHT, MANIFEST, MIN_TILE
from polymodal.cli.main import app

runner = CliRunner()
PROMPTS = ["a red circle above a blue square", "two yellow stars"]


def invoke(*args: object):  # type: ignore[no-untyped-def]
    return runner.invoke(app, [str(a) for a in args])


def test_generate_writes_the_apis_images_and_a_contact_sheet(tiny_diffusion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke(
        "generate", tiny_diffusion_dir, *PROMPTS, "--n", 2, "--steps", 2, "--seed", 5, "--out", out, "--json"
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["prompts"] == PROMPTS and manifest["options"]["steps"] == 2
    files = [Path(e["file"]) for e in manifest["images"]]
    assert [f.name for f in files] == ["000-00.png", "000-01.png", "001-00.png", "001-01.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*(f.name for f in files), CONTACT_SHEET, MANIFEST])

    expected = polymodal.load(tiny_diffusion_dir).generate(PROMPTS, n=2, steps=2, seed=5)
    written = [np.asarray(Image.open(f)) for f in files]
    for got, want in zip(written, expected):
        np.testing.assert_array_equal(got, np.asarray(want))

    # One labelled row per prompt, images scaled up by whole pixels in order.
    sheet = np.asarray(Image.open(out / CONTACT_SHEET))
    tile = MIN_TILE  # the tiny model's 32 px images, scaled 4x
    assert sheet.shape == (GAP + 2 * (LABEL_HEIGHT + tile + GAP), GAP + 2 * (tile + GAP), 3)
    for k, image in enumerate(written):
        row, col = divmod(k, 2)
        top, left = GAP + row * (LABEL_HEIGHT + tile + GAP) + LABEL_HEIGHT, GAP + col * (tile + GAP)
        np.testing.assert_array_equal(sheet[top : top + tile : 4, left : left + tile : 4], image)
    assert (sheet[GAP : GAP + LABEL_HEIGHT] < 128).any()  # the label is drawn


def test_same_command_same_bytes_and_a_prompts_file(tiny_gan_dir: Path, tmp_path: Path) -> None:
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a green triangle\n\n  two yellow stars  \n", encoding="utf-8")
    runs = []
    for name in ("a", "b"):
        result = invoke(
            "generate", tiny_gan_dir, "a red circle", "--prompts", prompts_file, "--n", 2, "--out", tmp_path / name
        )
        assert result.exit_code == 0, result.output
        assert "two yellow stars" in result.stdout and "002-01.png" in result.stdout
        runs.append({p.name: p.read_bytes() for p in (tmp_path / name).iterdir()})
    assert runs[0] == runs[1] and len(runs[0]) == 3 * 2 + 2
    manifest = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert manifest["prompts"] == ["a red circle", "a green triangle", "two yellow stars"]

    # A folder generate wrote is replaced as a whole: no image of the earlier, longer run is left behind.
    result = invoke("generate", tiny_gan_dir, "a red circle", "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["000-00.png", CONTACT_SHEET, MANIFEST]


def test_generate_errors(tiny_gan_dir: Path, tiny_dual_encoder_dir: Path, tmp_path: Path) -> None:
    result = invoke("generate", tiny_dual_encoder_dir, "a red circle", "--out", tmp_path / "x")
    assert result.exit_code == 2 and "cannot generate images: it supports embed" in result.output
    assert not (tmp_path / "x").exists()
    for options, message in [
        (["--n", 0], "n must be an integer in 1..64"),
        (["--steps", 5000], "steps must be an integer in 1..1000"),
        (["--sampler", "euler"], "sampler must be one of ddim, dpm_solver, ddpm"),
        (["--prompts", tmp_path / "missing.txt"], "missing.txt: cannot read the prompts"),
    ]:
        result = invoke("generate", tiny_gan_dir, "a red circle", *options, "--out", tmp_path / "x", "--json")
        assert result.exit_code == 2, result.output
        assert message in json.loads(result.stdout)["error"]
    result = invoke("generate", tiny_gan_dir, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "at least one PROMPT" in result.output

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = invoke("generate", tiny_gan_dir, "a red circle", "--out", mine)
    assert result.exit_code == 2 and "did not write" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("kind", ["diffusion", "gan"])
def test_readme_command_runs(kind: str, request, tmp_path: Path) -> None:  # noqa: ANN001
    model_dir = request.getfixturevalue(f"tiny_{kind}_dir")
    result = invoke(
        "generate", model_dir, "a red circle above a blue square", "--n", 4, "--steps", 2, "--guidance", 3, "--seed", 0,
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("000-0?.png"))) == 4


def test_a_long_prompts_list_gets_a_sheet_of_its_first_rows(
    tiny_gan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("polymodal.cli.generate.SHEET_ROWS", 2)
    result = invoke("generate", tiny_gan_dir, "a", "b", "c", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out").glob("00?-00.png"))) == 3
    sheet = Image.open(tmp_path / "out" / CONTACT_SHEET)
    assert sheet.height == GAP + 2 * (LABEL_HEIGHT + MIN_TILE + GAP)


def test_a_gan_records_only_the_options_it_used_and_names_those_it_ignored(
    tiny_gan_dir: Path, tiny_diffusion_dir: Path, tmp_path: Path
) -> None:
    result = invoke(
        "generate", tiny_gan_dir, "a red circle", "--steps", 50, "--guidance", 7, "--sampler", "ddpm", "--seed", 1,
        "--out", tmp_path / "gan",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "gan" / MANIFEST).read_text())["options"] == {"n": 1, "seed": 1}
    notes = [line for line in result.stderr.splitlines() if "do not apply" in line]
    assert len(notes) == 1 and "--steps, --guidance, --sampler" in notes[0] and "gan" in notes[0]
    assert notes[0].endswith(f"left out of {MANIFEST}")  # one line

    result = invoke("generate", tiny_gan_dir, "a red circle", "--out", tmp_path / "quiet")
    assert result.exit_code == 0 and "apply" not in result.stderr  # nothing given that it ignores: no note

    result = invoke("generate", tiny_diffusion_dir, "a red circle", "--steps", 2, "--out", tmp_path / "diffusion")
    assert result.exit_code == 0 and "apply" not in result.stderr
    options = json.loads((tmp_path / "diffusion" / MANIFEST).read_text())["options"]
    assert options == {"n": 1, "steps": 2, "guidance": 3.0, "seed": 0, "sampler": "ddim"}
