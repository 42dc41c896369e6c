"""Recipe checks that fail before any data is read: data.processors (its modalities and each one's settings), the
warmup an overridden train.steps leaves, and --set values a resumed run cannot change."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml

from polymodal.config import ConfigError
from polymodal.train.build import unused_processor_settings
from polymodal.train.recipe import Recipe, RecipeAdjusted, load_recipe
from polymodal.train.resume import CONFIG_NAME, check_resume_overrides


def recipe_error(name: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_recipe(name, ["data.path=unused", *overrides])
    return str(e.value)


def test_a_misspelt_processor_modality_is_an_unknown_key() -> None:
    message = recipe_error("shapes-video-clip", "data.processors.vidoe.frames=8")
    assert (
        "data.processors.vidoe (from --set data.processors.vidoe.frames=8): unknown key; known keys: audio, video"
        in (message)
    )
    # Image and text are set in the data section itself: the error says where.
    assert "data.image and data.max_length" in recipe_error("shapes-clip", "data.processors.image.image_size=32")


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("audio.n_melz=64", "data.processors.audio.n_melz (from --set data.processors.audio.n_melz=64): unknown key"),
        ("audio.sample_rate=-5", "data.processors.audio.sample_rate (from --set data.processors.audio.sample_rate=-5)"),
        (
            "audio.clip_seconds=0",
            "data.processors.audio.clip_seconds (from --set data.processors.audio.clip_seconds=0)",
        ),
        ("audio.augment.gain_dbb=3", "data.processors.audio.augment.gain_dbb (from --set"),
        ("video.frames=0", "data.processors.video.frames (from --set data.processors.video.frames=0)"),
        ("video.image.crop=middle", "data.processors.video.image.crop (from --set"),
    ],
)
def test_a_bad_processor_setting_names_its_field_path(override: str, line: str) -> None:
    message = recipe_error("shapes-clap", f"data.processors.{override}")
    assert line in message and "pydantic.dev" not in message and "validation error for" not in message


def test_an_unknown_processor_setting_lists_the_known_ones() -> None:
    known = recipe_error("shapes-clap", "data.processors.audio.n_melz=64").split("known keys: ")[1]
    assert {"sample_rate", "clip_seconds", "n_mels", "hop_length", "augment"} <= set(known.split(", "))
    nested = recipe_error("shapes-clap", "data.processors.audio.augment.gain_dbb=3").split("known keys: ")[1]
    assert {"gain_db", "random_crop", "time_masks"} <= set(nested.split(", "))


def test_audio_augment_the_features_cannot_take_is_a_recipe_error() -> None:
    message = recipe_error(
        "shapes-clap", "data.processors.audio.kind=waveform", "data.processors.audio.augment.freq_masks=2"
    )
    assert "data.processors.audio" in message and "freq_masks need spectrogram features" in message


def test_processor_settings_for_a_modality_the_model_does_not_read_are_said_to_be_unused() -> None:
    """A note, not an error: a recipe may be shared with a model of fewer towers (the audio demo's text baseline)."""
    recipe = load_recipe("shapes-clap", ["data.path=unused", "data.processors.video.frames=4"])
    assert unused_processor_settings(recipe) == [
        "note: data.processors.video is not used: the model (preset shapes-clap) has no video tower; it reads "
        "audio, text"
    ]
    assert unused_processor_settings(load_recipe("shapes-clap", ["data.path=unused"])) == []  # its audio settings fit
    assert unused_processor_settings(load_recipe("shapes-video-av", ["data.path=unused"])) == []  # both read


def test_the_recipe_keeps_the_processor_settings_as_written() -> None:
    """Validated, not filled in: the run's config.yaml, and so resuming a run, see the recipe's own settings."""
    recipe = load_recipe("shapes-clap", ["data.path=unused"])
    assert recipe.data.processors["audio"] == {
        "sample_rate": 16000,
        "clip_seconds": 2.0,
        "n_mels": 64,
        "hop_length": 320,
        "augment": {"random_crop": False, "gain_db": 6},
    }


def test_an_overridden_steps_below_the_recipes_warmup_lowers_the_warmup_to_a_tenth_with_a_note() -> None:
    """A tenth, not all the steps: the learning rate still decays after it."""
    with pytest.warns(
        RecipeAdjusted,
        match=r"train.warmup_steps lowered from 100 .*shapes-clap.yaml\) to 6, a tenth of the --set train.steps=60;",
    ):
        recipe = load_recipe("shapes-clap", ["data.path=unused", "train.steps=60"])
    assert recipe.train.steps == 60 and recipe.train.warmup_steps == 6
    with pytest.warns(RecipeAdjusted, match=r"to 0, a tenth of the --set train.steps=5"):
        assert load_recipe("shapes-clap", ["data.path=unused", "train.steps=5"]).train.warmup_steps == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RecipeAdjusted)  # a warmup that fits is left alone, silently
        assert load_recipe("shapes-clap", ["data.path=unused", "train.steps=500"]).train.warmup_steps == 100


def test_steps_and_warmup_both_overridden_out_of_order_are_refused_with_the_fix() -> None:
    message = recipe_error("shapes-clap", "train.steps=5", "train.warmup_steps=10")
    assert "from --set train.steps=5, --set train.warmup_steps=10" in message
    assert "warmup_steps (10) exceeds steps (5): set train.warmup_steps to at most 5" in message
    assert "{" not in message  # not the whole train section


def _run_started_with(run_dir: Path, *overrides: str) -> Path:
    run_dir.mkdir()
    recipe = load_recipe("shapes-clap", ["data.path=unused", *overrides])
    (run_dir / CONFIG_NAME).write_text(yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    return run_dir


def test_a_resume_refuses_a_set_that_changes_the_run_before_validating_it(tmp_path: Path) -> None:
    run = _run_started_with(tmp_path / "run")
    with pytest.raises(ConfigError) as e:
        check_resume_overrides(run, ["train.steps=20"])
    message = str(e.value)
    assert "--set train.steps=20: train.steps cannot change on resume (train.steps: 1200 in the run, 20 now" in message
    assert "warmup" not in message and "train.log_every" in message  # what may change instead
    # The run's own values, spelt as YAML leaves them, and settings that only change how it runs, are fine.
    check_resume_overrides(run, ["train.steps=1200", "train.lr=1e-3", "train.log_every=5", "data.path=./unused"])
    with pytest.raises(ConfigError, match="data.processors.audio.n_mels cannot change"):
        check_resume_overrides(run, ["data.processors.audio={n_mels: 32}"])


TEXT = {"name": "transformer_text", "params": {"vocab_size": 64, "width": 16, "depth": 1, "heads": 2, "max_length": 8}}
VIT = {"name": "vit", "params": {"image_size": 16, "patch_size": 8, "width": 16, "depth": 1, "heads": 2}}


def written_out(model_config: dict, **data: object) -> tuple:
    """A recipe whose model.config is written out, and that config parsed."""
    from polymodal.models import parse_model_config
    from polymodal.train.recipe import Recipe

    recipe = Recipe.model_validate(
        {
            "name": "mm",
            "model": {"config": model_config},
            "data": {"path": "unused", "image": {"image_size": 16}, "max_length": 8, **data},
            "objective": {"kind": "classification"},
            "train": {"steps": 4, "batch_size": 8},
        }
    )
    return recipe, parse_model_config(model_config)


def test_a_written_out_model_that_does_not_fit_the_data_is_refused_before_training() -> None:
    """A vocabulary smaller than the tokenizer's, a text tower shorter than data.max_length, a class count other
    than the labels': each named with its fix (they failed in torch mid-run, or trained logits no label names)."""
    from polymodal.train.build import check_model_fits_data

    classes = {"false": 0, "true": 1}
    config = {"kind": "fusion_classifier", "encoders": {"text": TEXT, "image": VIT}, "fusion": {"name": "concat"}}
    recipe, fits = written_out({**config, "num_classes": 2})
    check_model_fits_data(fits, recipe, 64, classes)  # as it should be: no error
    for num_classes in (1, 5):
        recipe, model = written_out({**config, "num_classes": num_classes})
        with pytest.raises(ConfigError, match=f"num_classes {num_classes}, but the labels have 2 \\(false, true\\)"):
            check_model_fits_data(model, recipe, 64, classes)
    with pytest.raises(ConfigError, match="encoders.text has vocab_size 64, but the tokenizer has 77 tokens: set it"):
        check_model_fits_data(fits, recipe, 77, classes)
    recipe, _ = written_out({**config, "num_classes": 2}, max_length=12)
    with pytest.raises(ConfigError, match="takes texts of up to 8 tokens, but data.max_length is 12"):
        check_model_fits_data(fits, recipe, 64, classes)


def test_a_contrastive_objective_needs_an_embedding_model() -> None:
    from polymodal.models import build_model
    from polymodal.train.build import make_objective

    config = {"kind": "fusion_classifier", "encoders": {"text": TEXT, "image": VIT}, "fusion": {"name": "concat"}}
    recipe, parsed = written_out({**config, "num_classes": 2})
    recipe.objective.kind = "contrastive"
    with pytest.raises(ConfigError, match="contrastive trains an embedding model.*builds fusion_classifier"):
        make_objective(recipe, build_model(parsed), tokenizer=None)  # type: ignore[arg-type]


def test_model_params_may_repeat_a_value_the_data_decides_but_not_change_it() -> None:
    from polymodal.train.build import recipe_model_config

    same = load_recipe("shapes-clip", ["data.path=unused", "data.image.image_size=32", "model.params.image_size=32"])
    assert recipe_model_config(same, 50).encoders["image"].params["image_size"] == 32
    other = load_recipe("shapes-clip", ["data.path=unused", "data.image.image_size=32", "model.params.image_size=64"])
    with pytest.raises(ConfigError) as e:
        recipe_model_config(other, 50)
    assert str(e.value) == (
        "model.params.image_size: 64, but data.image.image_size sets it to 32 for this run: "
        "leave image_size out of model.params"
    )
    # The tokenizer's size is known once the data is read: checked then, not before.
    vocab = load_recipe("shapes-clip", ["data.path=unused", "model.params.vocab_size=256"])
    recipe_model_config(vocab, None)
    with pytest.raises(ConfigError, match=r"model.params.vocab_size: 256, but the tokenizer .* sets it to 77"):
        recipe_model_config(vocab, 77)


def cli_train(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from polymodal.cli.main import app

    result = CliRunner().invoke(app, ["train", *args])
    return result.exit_code, result.output


def test_recipe_values_the_model_and_metric_cannot_take_fail_before_any_data_is_read(tmp_path: Path) -> None:
    """Exit 2 with one line naming the key, while data.path does not even exist."""
    nowhere = f"data.path={tmp_path / 'nowhere'}"
    code, output = cli_train("shapes-clip", "--set", nowhere, "--set", "model.params.max_length=16")
    assert code == 2 and "model.params.max_length: 16, but data.max_length sets it to 32" in output
    assert "Traceback" not in output
    code, output = cli_train("shapes-clip", "--set", nowhere, "--set", "train.metric=accuracy")
    assert code == 2
    assert (
        "train.metric 'accuracy' is not a metric of objective.kind contrastive (loss clip); its validation reports "
        "i2t_recall@1, t2i_recall@1, recall@1" in " ".join(output.split())
    )


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["objective.kind=classification", "objective.loss=mse"], ["rmse"]),
        (["objective.kind=classification", "objective.loss=bce"], ["exact_match"]),
        (["objective.kind=matching", "objective.loss=null"], ["accuracy"]),
    ],
)
def test_train_metric_is_checked_against_what_the_objective_reports(overrides: list[str], names: list[str]) -> None:
    from polymodal.train.build import check_recipe_before_data

    recipe = load_recipe("shapes-fusion", ["data.path=unused", *overrides, "train.metric=recall@1"])
    with pytest.raises(ConfigError, match=f"its validation reports {', '.join(names)}$"):
        check_recipe_before_data(recipe)
    check_recipe_before_data(load_recipe("shapes-fusion", ["data.path=unused", *overrides, f"train.metric={names[0]}"]))


def test_metric_mode_follows_the_metric_and_a_contradicting_one_is_refused() -> None:
    """A loss or an error improves as it falls, a recall as it rises: without train.metric_mode the best checkpoint is
    picked that way; a mode that says otherwise would keep the worst one, and is refused before any data is read."""
    from polymodal.train.build import check_recipe_before_data
    from polymodal.train.config import TrainConfig

    for metric, better, worse in [("caption_loss", 0.9, 1.2), ("rmse", 0.1, 0.3), ("recall@1", 0.6, 0.4)]:
        config = TrainConfig(steps=10, metric=metric)
        assert config.improved(better, worse) and not config.improved(worse, better) and config.improved(worse, None)
    assert TrainConfig(steps=10, metric="score", metric_mode="min").improved(0.1, 0.2)  # a metric of one's own: as told
    mse = ["objective.kind=classification", "objective.loss=mse", "train.metric=rmse"]
    check_recipe_before_data(load_recipe("shapes-fusion", ["data.path=unused", *mse]))
    check_recipe_before_data(load_recipe("shapes-fusion", ["data.path=unused", *mse, "train.metric_mode=min"]))
    for overrides, message in [
        (
            [*mse, "train.metric_mode=max"],
            "train.metric_mode max contradicts train.metric rmse, which improves as it falls",
        ),
        (
            ["train.metric_mode=min"],
            "train.metric_mode min contradicts train.metric accuracy, which improves as it rises",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            check_recipe_before_data(load_recipe("shapes-fusion", ["data.path=unused", *overrides]))


def test_several_contrastive_pairs_report_one_recall_each() -> None:
    from polymodal.train.validation import validation_metrics

    pairs = [("audio", "text"), ("image", "audio")]
    assert validation_metrics("contrastive", None, pairs) == ["audio-text_recall@1", "image-audio_recall@1", "recall@1"]


def test_a_misspelt_model_lrs_path_names_the_field_and_the_towers() -> None:
    from polymodal.train.build import build_recipe_model, recipe_model_config

    recipe = load_recipe(
        "shapes-fusion", ["data.path=unused", "data.image.image_size=32", "model.lrs={encoder: 1.0e-4}"]
    )
    with pytest.raises(ConfigError) as e:
        build_recipe_model(recipe, recipe_model_config(recipe, 50))
    assert str(e.value) == "model.lrs.encoder: no such submodule; towers: encoders.image, encoders.text"


def test_accumulating_a_loss_over_in_batch_negatives_is_said_not_to_enlarge_them() -> None:
    from polymodal.train.build import accumulation_note

    def recipe(kind: str, **objective: object):  # type: ignore[no-untyped-def]
        return Recipe.model_validate(
            {
                "name": "x",
                "model": {"preset": "shapes-clip"},
                "data": {"path": "unused"},
                "objective": {"kind": kind, **objective},
                "train": {"steps": 4, "batch_size": 32, "accumulate": 2, "warmup_steps": 1},
            }
        )

    note = accumulation_note(recipe("contrastive"))
    assert note is not None and "its own 32 items, not from all 64" in note
    assert accumulation_note(recipe("classification")) is None
    assert accumulation_note(recipe("caption")) is None and accumulation_note(recipe("caption", contrastive_weight=0.5))


def test_a_preset_parameter_its_config_refuses_is_a_config_error_naming_the_preset() -> None:
    """A model.params value the preset passes into its model config (an unknown fusion) is a config error in the
    recipe's terms, not pydantic's raw ValidationError."""
    from polymodal.train.build import recipe_model_config

    recipe = load_recipe("shapes-fusion", ["data.path=unused", "model.params.fusion=foo"])
    with pytest.raises(ConfigError, match=r"model.params of preset shapes-fusion: invalid model config") as info:
        recipe_model_config(recipe, None)
    assert "unknown fusion 'foo'" in str(info.value) and "input_value" not in str(info.value)
