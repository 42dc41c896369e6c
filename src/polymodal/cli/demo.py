"""``polymodal demo [image|audio|video]``: the end-to-end walk-through on the built-in ShapesWorld data.

Generates ShapesWorld (reused when already complete), trains the suite's recipes, evaluates each with the
``polymodal eval`` harness on ``test`` and ``test_novel`` (colour-shape pairs never seen in training; result
files with 95% CIs and provenance in ``OUT/<run>/eval.json``), prints a results table and writes
``results.json`` plus the ``polymodal report`` pages (``report.md``, ``report.html``) into the run directory.

- ``image``: on a locked ImageNet image tower, CLIP, statement classifiers with several fusion modules,
  captioners and VQA.
- ``audio``: ShapesWorld with sounds and speech; one space for image, audio and text (with the image<->audio
  retrieval that emerges), an audio captioner, spoken sentiment fused against each modality alone, and speaker
  identification on the pretrained voice tower.
- ``video``: ShapesWorld moves (clips of events); clip<->caption retrieval, action classification, captions that
  tell the events in order and true/false statements about them, every model on the locked ImageNet tower per frame.
"""

from __future__ import annotations

import json as jsonlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from polymodal.cli.data_shapes import print_summary, print_video_summary
from polymodal.cli.demo_budget import DemoBudget, PlannedJob, load_reference
from polymodal.cli.output import JsonOption, console, emit_json, fail

if TYPE_CHECKING:
    from polymodal.train.recipe import Recipe

# What each kind of demo run is evaluated on, and the metrics of the results table (benchmark, metric, label).
BENCHMARKS = {
    "clip": "shapes-zeroshot,shapes-retrieval",
    "fusion": "shapes-statements",
    "caption": "shapes-caption",
    "vqa": "shapes-vqa",
    "bind": "shapes-audio-zeroshot,shapes-audio-retrieval",
    "audiocap": "shapes-audio-caption",
    "sentiment": "shapes-sentiment",
    "speaker": "shapes-speaker",
    "video-clip": "shapes-video-retrieval,shapes-video-action",
    "video-action": "shapes-video-action",
    "video-caption": "shapes-video-caption",
    "video-statements": "shapes-video-statements",
    "video-qa": "shapes-video-qa",
    "video-av": "shapes-video-av",
    "scene-checker": "",  # an instrument: the generation benchmark reports its reading of the real images
    "gen-clip": "shapes-zeroshot,shapes-retrieval",
    "diffusion": "shapes-generation",
    "gan": "shapes-generation",
}


def _caption_rows(benchmark: str) -> list[tuple[str, str, str]]:
    return [(benchmark, "BLEU-4", "BLEU-4"), (benchmark, "CIDEr-D", "CIDEr-D")]


HEADLINE = {
    "clip": [
        ("shapes-zeroshot", "color_accuracy", "zero-shot colour"),
        ("shapes-zeroshot", "shape_accuracy", "zero-shot shape"),
        ("shapes-zeroshot", "accuracy", "zero-shot colour-shape"),
        ("shapes-retrieval", "i2t_R@1", "image->text R@1"),
        ("shapes-retrieval", "t2i_R@1", "text->image R@1"),
    ],
    "fusion": [("shapes-statements", "accuracy", "statement accuracy")],
    "caption": _caption_rows("shapes-caption"),
    "vqa": [("shapes-vqa", "vqa_accuracy", "VQA accuracy")],
    "bind": [
        ("shapes-audio-zeroshot", "color_accuracy", "zero-shot colour of a sound"),
        ("shapes-audio-zeroshot", "shape_accuracy", "zero-shot shape of a sound"),
        ("shapes-audio-zeroshot", "accuracy", "zero-shot colour-shape of a sound"),
        ("shapes-audio-retrieval", "a2t_R@1", "audio->text R@1"),
        ("shapes-audio-retrieval", "t2a_R@1", "text->audio R@1"),
        ("shapes-audio-retrieval", "i2a_R@1", "image->audio R@1 (never paired)"),
        ("shapes-audio-retrieval", "a2i_R@1", "audio->image R@1 (never paired)"),
    ],
    "audiocap": _caption_rows("shapes-audio-caption"),
    "sentiment": [("shapes-sentiment", "accuracy", "sentiment accuracy")],
    "speaker": [("shapes-speaker", "accuracy", "speaker accuracy")],
    "video-clip": [
        ("shapes-video-retrieval", "t2v_R@1", "text->video R@1"),
        ("shapes-video-retrieval", "v2t_R@1", "video->text R@1"),
        ("shapes-video-action", "accuracy", "zero-shot first action"),
    ],
    "video-action": [("shapes-video-action", "accuracy", "first action accuracy")],
    "video-caption": _caption_rows("shapes-video-caption"),
    "video-statements": [("shapes-video-statements", "accuracy", "statement accuracy (order, action)")],
    "video-qa": [
        ("shapes-video-qa", "vqa_accuracy", "question accuracy"),
        ("shapes-video-qa", "vqa_accuracy_order", "which shape changed first/last"),
    ],
    "video-av": [
        ("shapes-video-av", "accuracy", "which shape made the sound"),
        ("shapes-video-av", "accuracy_first", "  when the first event sounded"),
        ("shapes-video-av", "accuracy_second", "  when the second event sounded"),
        ("shapes-video-av", "accuracy without video", "  with the video dropped"),
        ("shapes-video-av", "accuracy without audio", "  with the audio dropped"),
    ],
}
_GENERATION_ROWS = [
    ("shapes-generation", "all_correct", "whole scene right (checker)"),
    ("shapes-generation", "color_accuracy", "colour in its cell"),
    ("shapes-generation", "shape_accuracy", "shape in its cell"),
    ("shapes-generation", "count_accuracy", "number of objects"),
    ("shapes-generation", "cell_accuracy", "an object in each prompted cell"),
    ("shapes-generation", "clip_score", "CLIP score (real images: next row)"),
    ("shapes-generation", "real_clip_score", "CLIP score of the real images"),
    ("shapes-generation", "FD (EfficientNet-Lite0)", "FD (EfficientNet-Lite0), lower is better"),
]
HEADLINE["scene-checker"] = []
HEADLINE["gen-clip"] = [
    ("shapes-zeroshot", "accuracy", "zero-shot colour-shape"),
    ("shapes-retrieval", "t2i_R@1", "text->image R@1"),
]
HEADLINE["diffusion"] = [*_GENERATION_ROWS, ("shapes-generation", "real_all_correct", "checker on the real images")]
HEADLINE["gan"] = _GENERATION_ROWS
SUITES = ("image", "audio", "video", "generation")
DEFAULT_OUT = {
    "image": "runs/demo",
    "audio": "runs/demo-audio",
    "video": "runs/demo-video",
    "generation": "runs/demo-generation",
}
TITLES = {
    "image": "ShapesWorld demo",
    "audio": "ShapesWorld audio demo",
    "video": "ShapesWorld video demo",
    "generation": "ShapesWorld text-to-image demo",
}


def job_kind(label: str) -> str:
    """The kind of a demo job (its BENCHMARKS and HEADLINE entry): the longest dash-separated prefix of its label
    that has one ("fusion-gmu" -> "fusion", "video-clip" -> "video-clip")."""
    parts = label.split("-")
    return next(k for k in ("-".join(parts[:i]) for i in range(len(parts), 0, -1)) if k in BENCHMARKS)


def _data(out: Path, n: int, seed: int, image_size: int, quiet: bool, audio: bool = False) -> dict[str, Any]:
    from polymodal.data.shapes import generate_shapesworld, is_complete, read_manifest

    data_dir = out / "shapes"
    if is_complete(data_dir, n, seed, image_size, sound=audio, speech=audio):
        manifest = read_manifest(data_dir) or {}
        return {
            **manifest,
            "out_dir": str(data_dir),
            "total": sum(manifest["counts"].values()),
            "elapsed_seconds": None,
            "reused": True,
        }
    # Sounds and speech cost about 10x an image: both cores then (the output does not depend on it).
    summary = generate_shapesworld(
        data_dir,
        n,
        seed=seed,
        image_size=image_size,
        progress=not quiet,
        sound=audio,
        speech=audio,
        workers=2 if audio else 1,
    )
    summary["reused"] = False
    return summary


# Steps of the models that fine-tune on the cached image tower, as multiples of --steps: a step of theirs costs about
# half a CLIP step, and they learn slowly. polymodal train, test split: the VQA model 0.660 at 700 steps, 0.783 at
# 1,400, 0.810 at 2,100; the captioner's BLEU-4 0.593 at 350, 0.653 at 700. The statement classifiers start from the
# VQA model and need fewer: FiLM 0.835 at 700 steps from a 1,400-step VQA run (0.821 with another seed), 0.845 at
# 1,400, 0.841 at 700 from the demo's 2,100-step VQA run; 0.663 at 1,400 from the CLIP run alone, where 1,050 steps
# were too few to learn position claims at all (0.52-0.58). With --from-scratch there is no chain, and the statement
# classifiers sit at chance (0.50) at any of these step counts.
STATEMENT_STEPS = 2
VQA_STEPS = 6
CAPTION_STEPS = 2
# The audio suite's steps as multiples of --steps (docs/audio.md has the measurements).
AUDIO_STEPS = {"bind": 3, "audiocap": 2, "sentiment": 0.5, "speaker": 1}
# The video suite's steps as multiples of --steps (docs/video.md has the measurements).
VIDEO_STEPS = {"clip": 3, "action": 2, "caption": 2, "statements": 3, "qa": 2, "av": 0.85}
# Clips in the video suite's train+val+test when --n is not given (images: 2,000).
VIDEO_CLIPS = 3000
# The generation suite's steps as multiples of --steps (docs/generation.md has the measurements), its images
# (32 px) when --n is not given, and where its scene checker's training cells go.
GENERATION_STEPS = {"scene-checker": 2.3, "gen-clip": 1, "diffusion": 2, "gan": 2.5}
GENERATION_IMAGES = 6000
GENERATION_BUDGET = 900  # seconds: two generators and their judges take longer than the other suites
CHECKER_CELLS = "scene-checker-cells"


def demo(
    suite: str = typer.Argument(
        "image",
        help="image: CLIP, fusion, captioning and VQA on images; audio: sounds, speech and voices; video: clips of "
        "events; generation: text-to-image diffusion and GAN, judged by a scene checker.",
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Run directory (default runs/demo, runs/demo-audio, runs/demo-video or runs/demo-generation); data goes "
        "to OUT/shapes.",
    ),
    n: int = typer.Option(
        None,
        "--n",
        help=f"ShapesWorld images (or clips) in train+val+test (default 2000; video: {VIDEO_CLIPS}; generation: "
        f"{GENERATION_IMAGES} at 32 px).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for data generation and training."),
    # The default keeps the whole demo within its budget on a 2-core machine (timings: benchmarks/README.md).
    steps: int = typer.Option(
        350,
        "--steps",
        help=f"Optimizer steps of the CLIP run; the statement classifiers train {STATEMENT_STEPS}x as many, "
        f"VQA {VQA_STEPS}x, the captioners {CAPTION_STEPS}x.",
    ),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="train.precision for every recipe: auto (bf16 where the "
        "CPU or GPU runs it natively, else fp32), fp32, bf16, or fp16 (CUDA only).",
    ),
    from_clip: bool = typer.Option(
        True,
        "--from-clip/--from-scratch",
        help="Fine-tune in a chain: the VQA model from the CLIP run's text tower, the statement classifiers from "
        "the VQA model.",
    ),
    fusions: str = typer.Option(
        "concat,gmu,film", "--fusions", help="Fusion modules to compare (comma-separated; image suite)."
    ),
    budget_seconds: float = typer.Option(
        None,
        "--budget",
        min=0,
        help="Seconds the whole demo may take (default 600; generation: 900): on a slower machine every job's "
        "steps are scaled to its measured speed (0: the demo's own steps).",
    ),
    data_only: bool = typer.Option(False, "--data-only", help="Only generate the data and print its summary."),
    json: bool = JsonOption,
) -> None:
    """Generate ShapesWorld, train the demo recipes, evaluate on test and test_novel, report."""
    if suite not in SUITES:
        fail(f"unknown demo {suite!r}; choose from {', '.join(SUITES)}", as_json=json)
    audio = suite == "audio"
    out = out if out is not None else Path(DEFAULT_OUT[suite])
    n = n if n is not None else {"video": VIDEO_CLIPS, "generation": GENERATION_IMAGES}.get(suite, 2000)
    if budget_seconds is None:
        budget_seconds = GENERATION_BUDGET if suite == "generation" else 600
    if n < 20:
        fail(f"--n must be at least 20, got {n}", as_json=json)
    if not data_only:
        _require_packaged_towers(audio, json)
    started = time.perf_counter()
    try:
        if suite == "video":
            summary = _video_data(out, n, seed, quiet=json)
        elif suite == "generation":
            summary = _generation_data(out, n, seed, quiet=json)
        else:
            summary = _data(out, n, seed, 64, quiet=json, audio=audio)
    except OSError as e:
        fail(f"cannot write {out / 'shapes'}: {e}", as_json=json)
    except ImportError as e:
        fail(str(e), as_json=json)
    if not json:
        if summary["reused"]:
            console.print(f"ShapesWorld already in {out / 'shapes'} (same parameters): reusing it.", highlight=False)
        (print_video_summary if suite == "video" else print_summary)(summary)
    if data_only:
        if json:
            emit_json({"data": summary})
        return

    from polymodal.evaluate.results import dump_results, to_json
    from polymodal.evaluate.runner import run_eval
    from polymodal.models import find_model_dir
    from polymodal.modules.encoders.cache import FeatureCache
    from polymodal.report import write_report
    from polymodal.train.run import run_recipe

    data_dir = out / "shapes"
    if suite == "image":
        jobs = image_jobs(out, steps, from_clip, fusions)
    elif suite == "generation":
        jobs = generation_jobs(out, steps)
    else:
        jobs = audio_jobs(steps) if audio else video_jobs(out, steps, from_clip)
    results: dict[str, Any] = {"suite": suite, "data": {k: v for k, v in summary.items() if k != "params"}, "runs": {}}
    judging = {label for job in jobs for label in job.judges.values()}
    planned_jobs = {job.label: PlannedJob(job.label, job.steps, judge=job.label in judging) for job in jobs}
    budget = _budget(budget_seconds, precision, list(planned_jobs.values()), started)
    if not json and budget.seconds > 0:
        console.print(
            f"budget {budget.seconds:.0f} s: this machine runs {budget.precision} matmuls at "
            f"{budget.measured_gflops:.0f} GFLOP/s, so the demo's own steps would take about "
            f"{budget.predicted_total():.0f} s (reference: {budget.reference['machine']})",
            highlight=False,
        )
    # Every job trains and evaluates on the same locked tower: its outputs, once computed, serve the jobs after.
    with FeatureCache.keep_alive():
        for job in jobs:
            label, recipe_name, own_steps = job.label, job.recipe, job.steps
            job_started = time.perf_counter()
            planned = planned_jobs[label]
            job_steps = budget.steps_for(planned)
            recipe = job.make_recipe(out / job.data_dir if job.data_dir else data_dir, job_steps, seed, precision)
            run_dir = out / label
            shutil.rmtree(run_dir, ignore_errors=True)  # the demo's own output: each demo trains afresh
            if not json:
                scaled = f", scaled from {own_steps} to fit the budget" if job_steps < own_steps else ""
                console.rule(f"[bold]{label}[/] ({recipe_name}, {job_steps} steps{scaled})")
            t0 = time.perf_counter()
            trained = run_recipe(recipe, run_dir, progress=not json)
            results.setdefault("machine", trained.machine)
            train_seconds = time.perf_counter() - t0
            model_dir = find_model_dir(run_dir)
            benchmarks = BENCHMARKS[job_kind(label)]
            run_record: dict[str, Any] = {
                "recipe": recipe_name,
                "model_dir": str(model_dir),
                "steps": job_steps,
                "own_steps": own_steps,
                "train_seconds": round(train_seconds, 1),
                "scores": {},  # an instrument (the scene checker) is not evaluated on its own
            }
            if benchmarks:
                eval_file = run_dir / "eval.json"
                judges = {name: str(find_model_dir(out / source)) for name, source in job.judges.items()}
                command = (
                    f"polymodal eval {model_dir} --benchmark {benchmarks} --data {data_dir} --seed {seed} "
                    f"--out {eval_file}" + "".join(f" --judge {name}={path}" for name, path in judges.items())
                )
                # The accuracy with each modality dropped: the sentiment model's beside its unimodal baselines,
                # and the audio-visual model's, which needs both.
                robust = label in ("sentiment", "video-av")
                command += " --robustness" if robust else ""
                t0 = time.perf_counter()
                doc = run_eval(
                    str(model_dir),
                    benchmarks,
                    data=data_dir,
                    seed=seed,
                    command=command,
                    with_robustness=robust,
                    judges=judges,
                    media_dir=run_dir / "generated" if judges else None,
                )
                dump_results(doc, eval_file)
                run_record |= {
                    "eval_file": str(eval_file),
                    "eval_seconds": round(time.perf_counter() - t0, 1),
                    "scores": _scores(to_json(doc)),
                }
            results["runs"][label] = run_record
            budget.finished(planned, job_steps, time.perf_counter() - job_started)
    results["budget"] = budget.summary()
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(jsonlib.dumps(results, indent=2))
    written = write_report([out / label for label in results["runs"]], out, title=TITLES[suite])
    if json:
        emit_json(results)
        return
    console.print(results_table(results))
    console.print(machine_line(results), highlight=False)
    console.print(
        f"report: {written.html} and {written.markdown}   results: {out / 'results.json'}   "
        f"total {results['elapsed_seconds']:.0f} s",
        highlight=False,
    )


def _generation_data(out: Path, n: int, seed: int, quiet: bool) -> dict[str, Any]:
    """ShapesWorld at 32 px in OUT/shapes with its full-spec prompt manifests, and the scene checker's training cells
    (real images only) in OUT/scene-checker-cells."""
    from polymodal.data.shapes import write_prompt_manifests
    from polymodal.evaluate.generation import write_scene_checker_data

    summary = _data(out, n, seed, 32, quiet)
    write_prompt_manifests(out / "shapes")
    shutil.rmtree(out / CHECKER_CELLS, ignore_errors=True)
    write_scene_checker_data(out / "shapes", out / CHECKER_CELLS, image_size=32)
    return summary


def _video_data(out: Path, n: int, seed: int, quiet: bool) -> dict[str, Any]:
    """ShapesWorld moves and the audio-visual clips in OUT/shapes: seconds to generate, so made afresh each time."""
    from polymodal.data.shapes_video import generate_shapesworld_video

    summary = generate_shapesworld_video(out / "shapes", n, seed=seed, av=True, workers=2, progress=not quiet)
    summary["reused"] = False
    return summary


def _require_packaged_towers(audio: bool, json: bool) -> None:
    """Fail now, not after the data and the first models, when a packaged tower a suite trains on is missing."""
    from polymodal.pretrained.locate import efficientnet_lite0_weights, resemblyzer_weights

    try:
        efficientnet_lite0_weights()
    except ImportError as e:
        fail(f"the demo trains on the packaged ImageNet tower: {e}", as_json=json)
    if audio:
        try:
            resemblyzer_weights()
        except ImportError as e:
            fail(f"the audio demo identifies speakers with the packaged voice tower: {e}", as_json=json)


def image_jobs(out: Path, steps: int, from_clip: bool, fusions: str) -> list[DemoJob]:
    """The image suite. Every model stands on the locked, cached ImageNet EfficientNet tower. A chain of fine-tuning
    runs: "clip" trains a text tower against it; the VQA model starts from that text tower; the statement
    classifiers start from the VQA model (its text tower and, for the fusion modules that match, its fusion). More
    steps for the models after CLIP: STATEMENT_STEPS, VQA_STEPS, CAPTION_STEPS."""
    clip_run = out / "clip" if from_clip else None
    vqa_run, vqa_fusion = (out / "vqa" if from_clip else None), _fusion_of("shapes-vqa-imagenet")
    jobs = [
        DemoJob("clip", "shapes-clip-imagenet", steps),
        # The decoders on the ImageNet tower (CLIP has nothing more to give them): Transformer and LSTM.
        DemoJob("caption", "shapes-caption-imagenet", CAPTION_STEPS * steps),
        DemoJob("caption-lstm", "shapes-caption-imagenet", CAPTION_STEPS * steps, params={"decoder": "lstm"}),
        DemoJob("vqa", "shapes-vqa-imagenet", VQA_STEPS * steps, FineTune(clip_run, "encoders.text", vqa_fusion)),
    ]
    return jobs + [
        DemoJob(
            f"fusion-{f}",
            "shapes-fusion-imagenet",
            STATEMENT_STEPS * steps,
            FineTune(vqa_run, "encoders.text", f, source_fusion=vqa_fusion, source_is_clip=False),
            {"fusion": f},
        )
        for f in fusions.split(",")
        if f
    ]


def audio_jobs(steps: int) -> list[DemoJob]:
    """The audio suite: image, audio and text in one space (image<->audio never paired), a captioner of sounds, spoken
    sentiment fused and from each modality alone, and speakers on the pretrained voice tower."""
    sentiment = round(AUDIO_STEPS["sentiment"] * steps)
    return [
        DemoJob("bind", "shapes-audio-bind", round(AUDIO_STEPS["bind"] * steps)),
        DemoJob("audiocap", "shapes-audio-caption", round(AUDIO_STEPS["audiocap"] * steps)),
        DemoJob("sentiment", "shapes-sentiment", sentiment),
        DemoJob("sentiment-text", "shapes-sentiment", sentiment, params={"source": None}),
        DemoJob("sentiment-audio", "shapes-sentiment", sentiment, params={"text": False}),
        DemoJob("speaker", "shapes-speaker", round(AUDIO_STEPS["speaker"] * steps)),
    ]


def video_jobs(out: Path, steps: int, from_clip: bool) -> list[DemoJob]:
    """The video suite, every model on the locked, cached ImageNet tower per frame under a temporal transformer:
    clip<->caption retrieval (and zero-shot actions from it), the first action from the clip alone, captions that
    tell the events in order, true/false statements about order and action, questions about time, and which shape
    made the sound (the audio-visual clips, which need both pictures and sound). The captioner, the statement
    classifier and the question answerer start from the retrieval run's towers (``from_clip``): on their own,
    statements stay at chance."""
    chain = FineTune(out / "video-clip" if from_clip else None, "encoders")
    return [
        DemoJob(
            f"video-{kind}",
            f"shapes-video-{kind}",
            round(multiple * steps),
            chain if kind in ("caption", "statements", "qa") else None,
        )
        for kind, multiple in VIDEO_STEPS.items()
    ]


def generation_jobs(out: Path, steps: int) -> list[DemoJob]:
    """The generation suite: a scene checker trained on real cells (the instrument), a CLIP model on the same 32 px
    images (for the CLIP score, and the diffusion model's text tower, locked and cached), then the diffusion model
    and the GAN, each on the full-spec prompts and judged by both."""
    prompts = {"train": "prompts_train.jsonl", "val": "prompts_val.jsonl"}
    judges = {"checker": "scene-checker", "clip": "gen-clip"}
    image = {"image": {"image_size": 32, "crop": "none", "mean": [0.5] * 3, "std": [0.5] * 3}}
    clip_text = {
        "init_from": str(out / "gen-clip"),
        "freeze": {"encoders.text": 0},
        "cache": {"encoders.text": 100_000},
    }
    scaled = {label: round(multiple * steps) for label, multiple in GENERATION_STEPS.items()}
    return [
        DemoJob("scene-checker", "shapes-scene-checker", scaled["scene-checker"], data_dir=CHECKER_CELLS),
        DemoJob("gen-clip", "shapes-clip", scaled["gen-clip"], data=image),
        DemoJob("diffusion", "shapes-diffusion", scaled["diffusion"], data=prompts, model=clip_text, judges=judges),
        DemoJob("gan", "shapes-gan", scaled["gan"], data=prompts, judges=judges),
    ]


# Pretrain -> fine-tune: the CLIP run's text tower already reads colour and shape words against the ImageNet
# features, so the VQA model starts from it (and the statement classifiers from the VQA model), at a lower learning
# rate than the new fusion and heads, whose noisy early gradients would otherwise wipe the pretrained features out.
# Attention fusion trains at 1e-4 on frozen towers: at the usual rates it stays at chance (docs/training.md).
def is_attention_fusion(name: str) -> bool:
    """Whether the registered fusion module ``name`` is one of the cross-modal attention family."""
    from polymodal.modules.fusion import FUSIONS
    from polymodal.modules.fusion.attention import AttentionFusion

    builder = FUSIONS.get(name) if name in FUSIONS else None
    return isinstance(builder, type) and issubclass(builder, AttentionFusion)


# Each fusion's layer that maps the image tower's features to 128 dimensions, as the CLIP run's image projection does:
# starting it from that projection puts the image features where the CLIP text tower already meets them. Measured
# with polymodal train, 1,400 steps from the CLIP run (test accuracy): FiLM seeds 0/1/2 0.627/0.626/0.619 ->
# 0.653/0.666/0.679 ("exists" claims 0.52 -> 0.60-0.65); GMU 0.587 -> 0.603. Concat's projection is 256 wide.
FUSION_IMAGE_PROJECTION = {"film": "fusion.proj", "gmu": "fusion.hidden.image"}
CLIP_IMAGE_PROJECTION = "projections.image.proj"


@dataclass
class FineTune:
    """How a demo model starts from ``source_run`` (None: trained from scratch).

    ``towers`` names the submodule holding the pretrained towers (``encoders``, ``encoders.text``); ``fusion`` is
    the model's fusion module: attention fusions train at 1e-4 with every tower frozen. The source is a CLIP run
    (``source_is_clip``) or a fusion model whose module is ``source_fusion`` (the VQA model). A fusion in
    :data:`FUSION_IMAGE_PROJECTION` starts its image projection from the CLIP run's, or from the source fusion's:
    the same module comes whole with ``init_from`` (same names), another one's projection through ``init_map``.
    """

    source_run: Path | None
    towers: str = "encoders.text"
    fusion: str | None = None
    source_fusion: str | None = None
    source_is_clip: bool = True

    def apply(self, recipe: Recipe) -> None:
        attention = self.fusion is not None and is_attention_fusion(self.fusion)
        if attention:
            recipe.train.lr = 1.0e-4
        if self.source_run is None:
            return
        recipe.model.init_from = str(self.source_run)
        if attention:
            recipe.model.freeze = {"encoders": 0}  # every tower, replacing the recipe's own mapping
        else:
            recipe.model.lrs = {self.towers: 1.0e-4}
        source_projection = (
            CLIP_IMAGE_PROJECTION if self.source_is_clip else FUSION_IMAGE_PROJECTION.get(self.source_fusion or "")
        )
        copied_whole = not self.source_is_clip and self.fusion == self.source_fusion
        if self.fusion in FUSION_IMAGE_PROJECTION and source_projection is not None and not copied_whole:
            recipe.model.init_map = {FUSION_IMAGE_PROJECTION[self.fusion]: source_projection}


@dataclass
class DemoJob:
    """One demo run: a packaged recipe, its steps before the budget, how it starts, preset parameters."""

    label: str
    recipe: str
    steps: int
    fine_tune: FineTune | None = None
    params: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # recipe.data settings (manifests, image size)
    model: dict[str, Any] = field(default_factory=dict)  # recipe.model settings (init_from, freeze, cache)
    data_dir: str | None = None  # the job's data under the demo's OUT (default: OUT/shapes)
    judges: dict[str, str] = field(default_factory=dict)  # the evaluation's judges: name -> an earlier job's label

    def make_recipe(self, data_dir: Path, steps: int, seed: int, precision: str) -> Recipe:
        from polymodal.train.recipe import Recipe, load_recipe

        recipe = load_recipe(self.recipe)
        recipe.data.path = str(data_dir)
        recipe.model.params = {**recipe.model.params, **self.params}
        recipe.data = type(recipe.data).model_validate({**recipe.data.model_dump(), **self.data})
        recipe.model = type(recipe.model).model_validate({**recipe.model.model_dump(), **self.model})
        schedule = {
            "steps": steps,
            "seed": seed,
            "precision": precision,
            "warmup_steps": max(1, steps // 10),
            "eval_every": max(1, steps // 3),
        }
        recipe.train = type(recipe.train).model_validate({**recipe.train.model_dump(), **schedule})
        if self.fine_tune is not None:
            self.fine_tune.apply(recipe)
        return Recipe.model_validate(recipe.model_dump())  # the cross-field checks, on the finished recipe


def _budget(seconds: float, precision: str, jobs: list[PlannedJob], started: float) -> DemoBudget:
    """The demo's budget on this machine: the precision its recipes will train in, and its matmul rate in it."""
    from polymodal.hardware import choose_precision, matmul_gflops
    from polymodal.train.trainer import training_device

    choice = choose_precision(precision, training_device())
    # The best of three short measurements: a moment of load elsewhere only ever lowers one.
    gflops = max(matmul_gflops(choice.dtype, 512, seconds=0.1) for _ in range(3)) if seconds > 0 else 0.0
    return DemoBudget(seconds, jobs, choice.precision, load_reference(), gflops, started=started)


def machine_line(results: dict[str, Any]) -> str:
    """What the figures were measured on, and whether the budget scaled any job's steps."""
    from polymodal.hardware import describe_record

    machine = results.get("machine")
    if not machine:
        return ""
    text = f"machine: {describe_record(machine)}; precision: {machine['precision']['reason']}"
    scaled = (results.get("budget") or {}).get("scaled_jobs") or {}
    if scaled:
        text += f". Steps scaled to fit the {results['budget']['budget_seconds']:.0f} s budget: " + ", ".join(
            f"{label} {results['runs'][label]['steps']}/{results['runs'][label]['own_steps']}"
            for label in scaled
            if label in results["runs"]
        )
    return text


def _fusion_of(recipe_name: str) -> str | None:
    """The fusion module a demo recipe's model uses (its preset parameter)."""
    from polymodal.train.recipe import load_recipe

    return load_recipe(recipe_name).model.params.get("fusion")


def _scores(doc: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """benchmark -> split -> {"metrics": ..., "ci95": ...} from a result file's JSON; the metric with each modality
    dropped (``--robustness``) joins the metrics as "accuracy without video"."""
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for result in doc["results"]:
        robustness = result.get("robustness") or {}
        dropped = {
            f"{robustness['metric']} without {modality}": value
            for modality, value in (robustness.get("missing_modality") or {}).items()
            if modality != "none"
        }
        scores.setdefault(result["benchmark"], {})[result["split"]] = {
            "metrics": {**result["metrics"], **dropped},
            "ci95": result.get("ci95") or {},
        }
    return scores


def _cell(entry: dict[str, Any] | None, metric: str) -> str:
    if entry is None or metric not in entry["metrics"]:
        return "-"
    ci = entry["ci95"].get(metric)
    value = f"{entry['metrics'][metric]:.3f}"
    return f"{value} ±{(ci[1] - ci[0]) / 2:.3f}" if ci else value  # the CI's half-width: narrow enough for a terminal


def _headline_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for label, run in results["runs"].items():
        for benchmark, metric, name in HEADLINE[job_kind(label)]:
            splits = run["scores"].get(benchmark, {})
            rows.append((label, name, _cell(splits.get("test"), metric), _cell(splits.get("test_novel"), metric)))
    return rows


def results_table(results: dict[str, Any]) -> Table:
    title = TITLES[results.get("suite", "image")]
    table = Table(
        title=f"{title} results (± half the 95% bootstrap CI; full intervals in the report)",
        title_justify="left",
    )
    for column in ("model", "metric", "test", "test_novel"):
        table.add_column(column, justify="right" if column.startswith("test") else "left")
    for row in _headline_rows(results):
        table.add_row(*row)
    return table
