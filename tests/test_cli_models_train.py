"""``polymodal models`` and ``polymodal train`` through the real typer app."""

import json
import math
import signal
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from polymodal.cli.main import app
from polymodal.data.shapes import generate_shapesworld
from polymodal.modules.fusion import FUSIONS

runner = CliRunner()
RECIPES = Path(__file__).resolve().parents[1] / "src" / "polymodal" / "recipes"


def _build(recipe, vocab_size: int = 50, derived: dict | None = None):  # type: ignore[no-untyped-def]
    """The recipe's model and its transfer report, as a run builds them."""
    from polymodal.train.build import build_recipe_model, recipe_model_config

    return build_recipe_model(recipe, recipe_model_config(recipe, vocab_size, derived))


def _save(model, directory: Path) -> None:  # type: ignore[no-untyped-def]
    from polymodal.models import save_model

    save_model(directory, model, {})


def test_models_lists_every_registry_with_parameters() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    catalogue = json.loads(result.stdout)
    assert set(catalogue) == {"presets", "processors", "encoders", "fusion", "heads", "decoders", "losses"}
    assert [row["name"] for row in catalogue["decoders"]] == ["lstm", "transformer"]
    assert [row["name"] for row in catalogue["fusion"]] == FUSIONS.names()
    vit = next(row for row in catalogue["encoders"] if row["name"] == "vit")
    assert {"image_size", "patch_size", "width", "depth"} <= {p["name"] for p in vit["params"]}
    assert {"shapes-clip", "shapes-fusion", "shapes-caption", "shapes-vqa"} <= {r["name"] for r in catalogue["presets"]}


def test_models_unknown_kind_is_a_clear_error() -> None:
    result = runner.invoke(app, ["models", "tokenizers"])
    assert result.exit_code == 2 and "unknown kind 'tokenizers'" in result.output and "decoders" in result.output


def test_train_recipe_then_resume(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    args = [
        "train",
        str(RECIPES / "shapes-fusion.yaml"),
        "--set",
        f"data.path={data}",
        "--set",
        "data.image.image_size=32",
        "--set",
        "train.steps=4",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.warmup_steps=1",
        "--set",
        "train.eval_every=2",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "model.params.fusion=gmu",
        "--out",
        str(tmp_path / "run"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["steps"] == 4 and 0.0 <= payload["best_metric"] <= 1.0
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "tokenizer",
        "model/config.json",
        "model/model.safetensors",
        "model/processors.json",
        "model/tokenizer",
        "best/config.json",
        "train_summary.json",
    ):
        assert (run / name).exists(), name
    assert "fusion: gmu" in (run / "config.yaml").read_text()
    # Resuming a finished run trains nothing more, keeps the step count and its summary, and says so.
    summary = (run / "train_summary.json").read_text()
    again = runner.invoke(app, [*args[:-3], "--resume", str(run), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["steps"] == 4 and json.loads(again.stdout)["already_complete"] is True
    said = runner.invoke(app, [*args[:-3], "--resume", str(run)])
    assert said.exit_code == 0, said.output
    assert f"{run} is already complete: it trained all its steps (4 steps)" in said.output
    assert "nothing to resume" in said.output and "samples/s" not in said.output
    assert (run / "train_summary.json").read_text() == summary  # not rewritten with 0 samples/s


def test_the_same_recipe_and_seed_give_bitwise_the_same_model(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    models = []
    for name in ("a", "b"):
        args = _clip_args(data, tmp_path / name, "--set", "train.steps=2")
        assert runner.invoke(app, args).exit_code == 0
        models.append(load_file(tmp_path / name / "model" / "model.safetensors"))
    assert models[0].keys() == models[1].keys()
    for key in models[0]:  # initial weights included: the seed is set before the model is built
        assert torch.equal(models[0][key], models[1][key]), key


def test_train_bad_recipe_value_names_the_field(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", str(RECIPES / "shapes-clip.yaml"), "--set", "objective.loss=infonce"])
    assert result.exit_code == 2
    assert "objective.loss" in result.output and "'clip'" in result.output and "'siglip'" in result.output


def test_fresh_run_refuses_a_directory_with_checkpoints(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    args = _clip_args(data, tmp_path / "run", "--set", "train.steps=2")
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--resume" in again.output


def test_init_from_transfers_clip_towers_into_a_fusion_classifier(tmp_path: Path) -> None:
    import torch

    from polymodal.models import build_preset
    from polymodal.train.recipe import load_recipe

    clip = build_preset("shapes-clip", vocab_size=50, image_size=32)
    _save(clip, tmp_path / "clip")
    recipe = load_recipe(
        RECIPES / "shapes-fusion.yaml",
        [f"model.init_from={tmp_path / 'clip'}", "data.image.image_size=32", "data.path=unused"],
    )
    fusion, report = _build(recipe)
    towers = sum(1 for k in clip.state_dict() if k.startswith("encoders."))
    assert report.transferred == towers  # every tower tensor (same names in every model kind), no projection
    for key, value in clip.state_dict().items():
        if key.startswith("encoders."):
            assert torch.equal(fusion.state_dict()[key], value)


def test_init_from_a_model_with_nothing_in_common_is_refused(tmp_path: Path) -> None:
    import pytest

    from polymodal.config import ConfigError
    from polymodal.models import build_preset
    from polymodal.train.recipe import load_recipe

    _save(build_preset("shapes-clip", vocab_size=50, image_size=32, image_encoder="cnn"), tmp_path / "cnn-clip")
    recipe = load_recipe(
        RECIPES / "shapes-fusion.yaml",
        [
            f"model.init_from={tmp_path / 'cnn-clip'}",
            "data.image.image_size=32",
            "data.path=unused",
            "model.params.image_encoder=vit",
        ],
    )
    fusion, report = _build(recipe)  # the text tower still matches
    assert not any(k.startswith("encoders.image.") for k in set(fusion.state_dict()) - set(report.not_transferred))
    # A CNN captioner has no text tower and a different image tower: nothing to copy is an error, not a no-op.
    _save(build_preset("shapes-caption", vocab_size=50, image_size=32, image_encoder="cnn"), tmp_path / "cnn-caption")
    recipe = load_recipe(
        RECIPES / "shapes-fusion.yaml",
        [f"model.init_from={tmp_path / 'cnn-caption'}", "data.image.image_size=32", "data.path=unused"],
    )
    with pytest.raises(ConfigError, match="no tensor matches"):
        _build(recipe)


def test_init_map_copies_a_submodule_whose_name_differs(tmp_path: Path) -> None:
    """model.init_map: FiLM's input projection starts as the CLIP image projection (same shape, other name)."""
    from polymodal.config import ConfigError
    from polymodal.models import build_preset
    from polymodal.train.recipe import load_recipe

    clip = build_preset("shapes-clip", vocab_size=50, image_size=32)
    _save(clip, tmp_path / "clip")
    base = [
        f"model.init_from={tmp_path / 'clip'}",
        "data.image.image_size=32",
        "data.path=unused",
        "model.params.fusion=film",
    ]

    def build(init_map: str):
        return _build(load_recipe(RECIPES / "shapes-fusion.yaml", [*base, f"model.init_map={init_map}"]))

    fusion, report = build("{fusion.proj: projections.image.proj}")
    projection = clip.state_dict()["projections.image.proj.weight"]
    assert torch.equal(fusion.state_dict()["fusion.proj.weight"], projection)
    # The CLIP projection has no bias: FiLM's keeps its initialisation and is reported as not transferred.
    assert "fusion.proj.bias" in report.not_transferred
    assert "fusion.proj.weight" not in report.not_transferred
    unmapped, unmapped_report = _build(load_recipe(RECIPES / "shapes-fusion.yaml", base))
    assert not torch.equal(unmapped.state_dict()["fusion.proj.weight"], projection)
    assert report.transferred == unmapped_report.transferred + 1

    with pytest.raises(ConfigError, match="no weights under 'projections.image.nope'"):
        build("{fusion.proj: projections.image.nope}")
    with pytest.raises(ConfigError, match="this model has no 'fusion.nope.weight'"):
        build("{fusion.nope: projections.image.proj}")
    with pytest.raises(ConfigError, match=r"has shape \(128, 128\), 'fusion.position.weight' wants \(128, 2\)"):
        build("{fusion.position: projections.image.proj}")
    with pytest.raises(ConfigError, match="init_map needs model.init_from"):
        load_recipe(
            RECIPES / "shapes-fusion.yaml", ["data.path=unused", "model.init_map={fusion.proj: projections.image.proj}"]
        )


def test_fine_tuning_keeps_the_pretrained_models_tokenizer(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    common = [
        "--set",
        f"data.path={data}",
        "--set",
        "data.image.image_size=32",
        "--set",
        "train.steps=2",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.warmup_steps=1",
        "--json",
    ]
    assert (
        runner.invoke(
            app,
            [
                "train",
                str(RECIPES / "shapes-clip.yaml"),
                "--out",
                str(tmp_path / "clip"),
                "--set",
                "data.vocab_size=40",
                *common,
            ],
        ).exit_code
        == 0
    )
    result = runner.invoke(
        app,
        [
            "train",
            str(RECIPES / "shapes-fusion.yaml"),
            "--out",
            str(tmp_path / "fusion"),
            "--set",
            f"model.init_from={tmp_path / 'clip'}",
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    # The fusion recipe alone would train a 512-word tokenizer; fine-tuning reuses the 40-word one.
    assert (tmp_path / "fusion/tokenizer/tokenizer.json").read_text() == (
        tmp_path / "clip/tokenizer/tokenizer.json"
    ).read_text()


def test_precision_no_survives_yaml_reading_it_as_false() -> None:
    from polymodal.train.recipe import load_recipe

    # YAML 1.1 turns a bare `no` into false; the recipe must still mean "no mixed precision" (fp32).
    recipe = load_recipe(RECIPES / "shapes-clip.yaml", ["train.precision=no"])
    assert recipe.train.precision == "fp32"
    assert load_recipe(RECIPES / "shapes-clip.yaml").train.precision == "auto"
    with pytest.raises(Exception, match="precision"):
        load_recipe(RECIPES / "shapes-clip.yaml", ["train.precision=yes"])


def test_hard_negatives_need_the_clip_loss_and_valid_groups() -> None:
    from polymodal.config import ConfigError
    from polymodal.train.recipe import load_recipe

    assert load_recipe(RECIPES / "shapes-clip.yaml").objective.hard_negatives  # the recipe uses them
    with pytest.raises(
        ConfigError, match="hard_negatives works with kind: contrastive and loss: clip, or kind: adversarial"
    ):
        load_recipe(RECIPES / "shapes-clip.yaml", ["objective.loss=siglip"])
    with pytest.raises(ConfigError, match="'red' is in two groups"):
        load_recipe(RECIPES / "shapes-clip.yaml", ["objective.hard_negatives=[[red, blue], [red, green]]"])


def test_imagenet_recipes_lock_and_cache_the_pretrained_image_tower() -> None:
    import pytest

    from polymodal.config import ConfigError
    from polymodal.modules.encoders import EfficientNetLite0
    from polymodal.modules.encoders.cache import CachedEncoder
    from polymodal.pretrained import load_efficientnet_lite0
    from polymodal.train.recipe import load_recipe

    packaged = load_efficientnet_lite0().state_dict()
    for name in ("shapes-clip-imagenet", "shapes-caption-imagenet", "shapes-vqa-imagenet", "shapes-fusion-imagenet"):
        recipe = load_recipe(RECIPES / f"{name}.yaml", ["data.path=unused"])
        model, _ = _build(recipe, derived={"num_answers": 4} if "vqa" in name else {})
        cached = model.get_submodule("encoders.image")
        assert isinstance(cached, CachedEncoder) and isinstance(cached.inner, EfficientNetLite0)
        encoder = cached.inner
        assert encoder.frozen and cached.frozen
        assert all(torch.equal(encoder.state_dict()[k], v) for k, v in packaged.items())  # the ImageNet weights
        model.train()
        assert not encoder.training  # locked: BatchNorm keeps its ImageNet statistics
        assert any(p.requires_grad for p in model.parameters())
    # A tower must be frozen to be cached, and the errors name the field.
    recipe = load_recipe(RECIPES / "shapes-clip-imagenet.yaml", ["data.path=unused", "model.freeze={}"])
    with pytest.raises(ConfigError, match=r"model.cache.encoders.image: only a frozen tower.*model.freeze"):
        _build(recipe)
    recipe = load_recipe(RECIPES / "shapes-clip-imagenet.yaml", ["data.path=unused", "model.cache={image_tower: 10}"])
    with pytest.raises(
        ConfigError, match=r"model.cache.image_tower: no such submodule; towers: encoders.image, encoders.text"
    ):
        _build(recipe)


def test_freezing_a_container_of_towers_keeps_each_in_eval_mode() -> None:
    from polymodal.train.recipe import load_recipe

    recipe = load_recipe(
        RECIPES / "shapes-fusion.yaml", ["data.path=unused", "data.image.image_size=32", "model.freeze={encoders: 0}"]
    )
    model, _ = _build(recipe)
    model.train()
    assert all(e.frozen and not e.training for e in model.encoders.values()) and model.fusion.training


def _clip_args(data: Path, run: Path, *extra: str) -> list[str]:
    return [
        "train",
        str(RECIPES / "shapes-clip.yaml"),
        "--set",
        f"data.path={data}",
        "--set",
        "data.image.image_size=32",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.warmup_steps=1",
        *extra,
        "--out",
        str(run),
        "--json",
    ]


def test_resume_refuses_a_recipe_other_than_the_runs(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    run = tmp_path / "run"
    assert runner.invoke(app, _clip_args(data, run, "--set", "train.steps=2")).exit_code == 0
    other = runner.invoke(app, [*_clip_args(data, run, "--set", "train.steps=4"), "--resume", str(run)])
    assert other.exit_code != 0
    assert "train.steps: 2 in the run, 4 now" in other.output and "config.yaml" in other.output
    # How often it logs or checkpoints is not part of what the run computes.
    same = runner.invoke(
        app, [*_clip_args(data, run, "--set", "train.steps=2", "--set", "train.log_every=1"), "--resume", str(run)]
    )
    assert same.exit_code == 0, same.output
    elsewhere = runner.invoke(
        app, [*_clip_args(data, tmp_path / "other", "--set", "train.steps=2"), "--resume", str(run)]
    )
    assert elsewhere.exit_code == 2 and "drop --out" in elsewhere.output
    # Without a RECIPE the run's own config.yaml is the recipe.
    own = runner.invoke(app, ["train", "--resume", str(run), "--json"])
    assert own.exit_code == 0, own.output
    assert json.loads(own.stdout)["steps"] == 2
    neither = runner.invoke(app, ["train"])
    assert neither.exit_code == 2 and "--resume RUN_DIR" in neither.output


def test_polymodal_train_killed_with_sigkill_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """The issue's test: `polymodal train RECIPE` killed (SIGKILL) mid-run, `--resume RUN_DIR`, same tensors."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    from polymodal.train.checkpoint import list_checkpoints

    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    steps = 40
    # Every step logged and checkpointed: a kill between the two makes the resumed run log that step again.
    settings = [
        "--set",
        f"train.steps={steps}",
        "--set",
        "train.checkpoint_every=1",
        "--set",
        "train.eval_every=20",
        "--set",
        "train.log_every=1",
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the killed process: the same reductions, so bitwise the same sums
    try:
        reference = runner.invoke(app, _clip_args(data, tmp_path / "reference", *settings))
        assert reference.exit_code == 0, reference.output
        killed = tmp_path / "killed"
        command = [sys.executable, "-m", "polymodal", *_clip_args(data, killed, *settings)]
        proc = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
        # Any step must do: a random one on either side of the evaluation at step 20, a random moment in it
        # (a training step, a checkpoint being written, the evaluation).
        seed = random.randrange(1 << 30)  # in every failure message: random.Random(seed) replays the kill
        chance = random.Random(seed)
        target, delay = chance.randint(3, 32), chance.uniform(0.0, 0.05)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            newest = list_checkpoints(killed)
            if newest and newest[-1].step >= target:
                break
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        checkpoints = list_checkpoints(killed)
        assert checkpoints, f"the run wrote no checkpoint before the kill (exit code {proc.returncode}, seed {seed})"
        killed_at = checkpoints[-1].step
        assert 0 < killed_at < steps, (
            f"the kill must land mid-run (target step {target}, newest checkpoint {killed_at}, seed {seed})"
        )
        resumed = runner.invoke(app, [*_clip_args(data, killed, *settings), "--resume", str(killed)])
        assert resumed.exit_code == 0, resumed.output
    finally:
        torch.set_num_threads(threads)
    assert json.loads(resumed.stdout)["steps"] == steps
    want = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    got = load_file(killed / "model" / "model.safetensors")
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), f"{key} differs after a kill at step {killed_at} (seed {seed})"
    logged = [
        json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines() if '"eval"' not in line
    ]
    assert logged == list(range(1, steps + 1)), (
        f"steps logged twice or not at all (kill at step {killed_at}, seed {seed})"
    )


def test_caption_recipe_with_a_weighted_contrastive_loss(tmp_path: Path) -> None:
    """Captioning + 0.5 x CLIP loss in one task (CoCa-style): both losses logged, their weighted sum trained."""
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    args = [
        "train",
        str(RECIPES / "shapes-caption.yaml"),
        "--set",
        f"data.path={data}",
        "--set",
        "data.image.image_size=32",
        "--set",
        "train.steps=3",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.warmup_steps=1",
        "--set",
        "train.log_every=1",
        "--set",
        "objective.contrastive_weight=0.5",
    ]
    missing = runner.invoke(app, [*args, "--out", str(tmp_path / "no-tower"), "--json"])
    assert missing.exit_code != 0 and "model.params.contrastive=true" in missing.output
    result = runner.invoke(
        app, [*args, "--set", "model.params.contrastive=true", "--out", str(tmp_path / "run"), "--json"]
    )
    assert result.exit_code == 0, result.output
    records = [
        json.loads(line)
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if '"eval"' not in line
    ]
    assert len(records) == 3
    for r in records:
        assert r["loss"] == pytest.approx(r["caption"] + 0.5 * r["contrastive"], rel=1e-5)
    wrong_task = runner.invoke(
        app, ["train", str(RECIPES / "shapes-clip.yaml"), "--set", "objective.contrastive_weight=0.5"]
    )
    assert wrong_task.exit_code == 2 and "objective" in wrong_task.output and "contrastive_weight" in wrong_task.output


def test_resume_config_differences_across_polymodal_versions() -> None:
    """Settings added or removed since a run started do not block its resume; real changes do."""
    import copy

    from polymodal.train.recipe import load_recipe
    from polymodal.train.resume import resume_config_differences

    recipe = load_recipe(RECIPES / "shapes-fusion.yaml", ["data.path=data/shapes", "model.params.fusion=gmu"])
    saved = recipe.model_dump(mode="json")
    assert resume_config_differences(recipe, saved) == {}
    older = copy.deepcopy(saved)
    del older["train"]["gradient_checkpointing"], older["objective"]["pairs"]  # added since, at their defaults
    older["train"]["retired_option"] = 3  # removed since
    older["data"]["path"] = "./data/shapes/"  # the same directory, spelled otherwise
    older["task"] = older.pop("objective")  # the section's name before it was `objective`
    assert resume_config_differences(recipe, older) == {}
    changed = load_recipe(RECIPES / "shapes-fusion.yaml", ["data.path=data/other", "train.gradient_checkpointing=true"])
    assert list(resume_config_differences(changed, older)) == [
        "data.path",
        "model.params.fusion",
        "train.gradient_checkpointing",
    ]


def test_recipe_tower_learning_rates_reach_the_optimizer(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    run = tmp_path / "run"
    args = _clip_args(
        data,
        run,
        "--set",
        "train.steps=2",
        "--set",
        "train.log_every=1",
        "--set",
        "train.warmup_steps=0",
        "--set",
        "train.lr=1.0e-3",
        "--set",
        "model.lrs={encoders.text: 1.0e-5}",
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    factor = 0.5 * (1 + math.cos(math.pi * 1 / 2))  # cosine schedule after step 1 of 2
    assert first["lr"] == pytest.approx(1e-3 * factor) and first["lrs"] == {
        "encoders.text": pytest.approx(1e-5 * factor)
    }


def test_resuming_a_run_started_before_the_objective_section_is_refused_clearly(tmp_path: Path) -> None:
    """Such a run's checkpoints name the weights the old way: the refusal says what to do instead."""
    import yaml

    from polymodal.config import ConfigError
    from polymodal.train.recipe import load_recipe
    from polymodal.train.resume import CONFIG_NAME, check_resume_config

    recipe = load_recipe(RECIPES / "shapes-clip.yaml", ["data.path=unused"])
    old = recipe.model_dump(mode="json")
    old["task"] = old.pop("objective")
    (tmp_path / CONFIG_NAME).write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="before the modality-generic core.*model.init_from"):
        check_resume_config(recipe, tmp_path)


@pytest.mark.parametrize(("encoder", "kind"), [("transformer", "log_mel"), ("cnn", "mfcc"), ("lstm", "log_mel")])
def test_a_presets_audio_tower_reads_as_many_bands_as_the_recipes_audio_features_make(encoder: str, kind: str) -> None:
    """``data.processors.audio`` with 16 mel bands (or 13 MFCCs) builds an audio tower over 16 (13) bands, not the
    preset's default 64, so the recipe's features go through it."""
    from polymodal.data.audio import AudioFeatures
    from polymodal.train.recipe import load_recipe

    settings = [f"data.processors.audio.{k}={v}" for k, v in {"kind": kind, "n_mels": 16, "n_mfcc": 13}.items()]
    recipe = load_recipe("shapes-sentiment", [f"model.params.audio_encoder={encoder}", "data.path=unused", *settings])
    model, _ = _build(recipe)
    features = AudioFeatures(kind=kind, n_mels=16, n_mfcc=13, clip_seconds=0.5)(torch.randn(2, 8000))
    assert features.shape[1] == (16 if kind == "log_mel" else 13)
    tower = model.encoders["audio"].eval()
    with torch.no_grad():
        assert tower(features).tokens.shape[0] == 2
    default = load_recipe("shapes-sentiment", ["data.path=unused", "data.processors={}"])
    assert _build(default)[0].encoders["audio"].input_norm.num_features == 64  # no audio settings: the preset's own


def test_bad_samples_are_counted_once_and_the_run_says_so(tmp_path: Path) -> None:
    """Two broken images in a run of several epochs: two bad samples, in the summary, the file, the done line and
    train.log; the done line rounds the best metric and stays one line."""
    data = tmp_path / "shapes"
    generate_shapesworld(data, 40, seed=0, image_size=32, progress=False)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for row in rows[:2]:
        (data / row["image"]).write_bytes(b"not an image")
    run = tmp_path / ("a-run-directory-with-a-long-name-" * 2)
    steps = 3 * len(rows) // 8  # three epochs
    args = _clip_args(data, run, "--set", f"train.steps={steps}", "--set", f"train.eval_every={steps}")[:-1]
    result = runner.invoke(app, args)  # without --json: the lines people read
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["bad_samples"] == 2 and sum(summary["bad_samples_by_kind"].values()) == 2
    assert len((run / "bad_samples.jsonl").read_text().splitlines()) == 2
    (kind,) = summary["bad_samples_by_kind"]
    note = f"skipped 2 bad samples ({kind} 2): see {run / 'bad_samples.jsonl'}"
    lines = result.stdout.splitlines()
    assert note in lines and (run / "train.log").read_text().splitlines()[-1] == note
    (done,) = [line for line in lines if line.startswith("done ")]
    assert f"best recall@1 = {summary['best_metric']:.4g} (step {steps})" in done, result.stdout


def test_ctrl_c_exits_130_saying_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polymodal.train.run
    from polymodal.train.trainer import TrainingInterrupted

    run = tmp_path / "run"

    def stopped_at_step_8(*args: object, **kwargs: object) -> None:
        raise TrainingInterrupted(run, 8, checkpointed=True)

    monkeypatch.setattr(polymodal.train.run, "run_recipe", stopped_at_step_8)
    args = ["train", "shapes-clip", "--set", "data.path=unused", "--out", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 130
    assert f"interrupted at step 8; checkpoint saved; resume with `polymodal train --resume {run}`" in result.output

    def preempted_at_step_8(*args: object, **kwargs: object) -> None:
        raise TrainingInterrupted(run, 8, checkpointed=True, signum=signal.SIGTERM)

    monkeypatch.setattr(polymodal.train.run, "run_recipe", preempted_at_step_8)
    assert runner.invoke(app, args).exit_code == 143  # 128 + SIGTERM, as a shell reports it

    def stopped_while_reading_data(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(polymodal.train.run, "run_recipe", stopped_while_reading_data)
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 130
    payload = json.loads(result.stdout)
    assert payload["interrupted"] is True and payload["checkpoint_step"] is None
    assert payload["message"] == f"interrupted before {run} had a checkpoint: nothing to resume"


def test_recipe_errors_name_their_origin_and_are_found_before_any_data_is_read(tmp_path: Path) -> None:
    unread = str(tmp_path / "no-data-here")
    typo = runner.invoke(app, ["train", "shapes-clip", "--set", "train.stepz=5"])
    assert typo.exit_code == 2
    assert "error: --set on " in typo.output and "train.stepz (from --set train.stepz=5): unknown key" in typo.output
    setting = runner.invoke(
        app, ["train", "shapes-clap", "--set", f"data.path={unread}", "--set", "data.processors.audio.n_melz=64"]
    )
    assert setting.exit_code == 2 and "data.processors.audio.n_melz (from --set" in setting.output
    assert "pydantic" not in setting.output
    tower = runner.invoke(
        app, ["train", "shapes-clap", "--set", f"data.path={unread}", "--set", "data.processors.video.frames=4"]
    )
    assert "note: data.processors.video is not used: the model (preset shapes-clap) has no video tower" in (
        tower.output
    )
    assert unread in tower.output  # a note: it went on to read the data
    # A shorter run than the recipe's warmup: the warmup takes a tenth of it, and a note says so.
    short = runner.invoke(app, ["train", "shapes-clap", "--set", f"data.path={unread}", "--set", "train.steps=5"])
    assert "note: train.warmup_steps lowered from 100" in short.output and "to 0, a tenth" in short.output
    assert "exceeds" not in short.output and unread in short.output  # it got as far as reading the data
    # On resume, what cannot change is the error, not what validating the changed recipe finds.
    run = tmp_path / "run"
    run.mkdir()
    from polymodal.train.recipe import load_recipe

    saved = load_recipe("shapes-clap", [f"data.path={unread}"]).model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.steps=20"])
    assert resumed.exit_code == 2
    assert "train.steps cannot change on resume (train.steps: 1200 in the run, 20 now" in resumed.output
    assert "warmup" not in resumed.output and "{" not in resumed.output


def test_train_list_has_a_header_and_aligned_columns() -> None:
    result = runner.invoke(app, ["train", "--list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["recipe", "model", "objective", "steps"]
    assert len({len(line) for line in lines}) == 1  # the steps column is right-aligned: every line ends together
    for column in ("model", "objective"):
        start = lines[0].index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines), column


def test_models_processors_lists_the_settings_recipes_use() -> None:
    result = runner.invoke(app, ["models", "processors", "--json"])
    assert result.exit_code == 0
    rows = {row["name"]: row for row in json.loads(result.stdout)["processors"]}
    audio = {p["name"]: p["default"] for p in rows["audio"]["params"]}
    assert {"sample_rate", "clip_seconds", "n_mels", "hop_length", "augment.gain_db"} <= set(audio)
    assert "features" not in audio and audio["sample_rate"] == 16000
    video = {p["name"] for p in rows["video"]["params"]}
    assert {"frames", "sampling", "image.image_size", "augment.hflip"} <= video
    assert rows["audio"]["recipe_key"] == "data.processors.audio" and rows["image"]["recipe_key"] == "data.image"


def test_the_done_line_rounds_the_best_metric_and_says_when_there_is_none(capsys: pytest.CaptureFixture[str]) -> None:
    from polymodal.cli.train import _report
    from polymodal.train.trainer import TrainResult

    run = Path("runs") / ("a-long-run-directory-name-" * 3)
    _report(
        TrainResult(step=300, stopped_early=False, best_metric=0.2500000074505806, best_step=300),
        run,
        "recall@1",
        False,
    )
    _report(TrainResult(step=2000, stopped_early=False, best_metric=None, best_step=None), run, None, False)
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith("best recall@1 = 0.25 (step 300)")
    assert second.endswith("no best metric (train.metric is not set)")
