"""``run_eval``: load a model once, run named benchmarks on their splits, add robustness and provenance.

Determinism: models run in eval mode, torch and the bootstrap are seeded with ``seed``, every
corruption draws from a generator seeded by (seed, corruption, severity, image index) and every
attack's random start from one seeded by (seed, batch), so the same command on the same files
gives the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from PIL import Image

from polymodal.evaluate.benchmarks import BENCHMARKS, LoadedSplit
from polymodal.evaluate.context import ATTACK_STEPS, Attack, EvalContext, NotApplicable
from polymodal.evaluate.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from polymodal.evaluate.provenance import command_line, make_provenance, model_hash
from polymodal.evaluate.results import (
    JudgeProvenance,
    Result,
    ResultFile,
    Robustness,
    Skipped,
    describe_epsilon,
    describe_skipped,
    epsilon_key,
)
from polymodal.fsutil import data_hash
from polymodal.hardware import choose_precision, machine_record
from polymodal.modules.attacks import DEFAULT_STEP_SHARE

Progress = Callable[[str], None]


def parse_benchmarks(names: str | Sequence[str]) -> list[str]:
    """``"a,b"`` or a list -> names, each known (the error lists the known ones)."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    if not items:
        raise ValueError(f"no benchmark given; choose from {', '.join(BENCHMARKS)}")
    unknown = [n for n in items if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    return items


def media_dir_for(result_file: str | Path) -> Path:
    """Where a run whose result file is ``result_file`` writes what the model made (``eval.json`` ->
    ``eval-generated/``): beside it, one folder per result file so two results in a folder keep their own images."""
    path = Path(result_file)
    return path.with_name(f"{path.stem}-generated")


def _corrupted(name: str, severity: int, seed: int, image: Image.Image, index: int) -> Image.Image:
    return corrupt(image, name, severity, seed=seed, index=index)


def robustness(
    loaded: LoadedSplit,
    headline_value: float,
    seed: int,
    severities: Sequence[int] = SEVERITIES,
    progress: Progress | None = None,
) -> Robustness:
    """The headline metric with each droppable modality absent and, for images, under each corruption severity."""
    h = loaded.headline
    out = Robustness(metric=h)
    if loaded.drops:
        out.missing_modality = {"none": headline_value}
        for modality in loaded.drops:
            out.missing_modality[modality] = loaded.score(None, modality, False).metrics[h]
    if loaded.media != "image":
        out.skipped = {"corruptions": f"image corruptions; this benchmark scores {loaded.media}"}
        return out
    out.corruptions = {}
    for name in CORRUPTIONS:
        curve = {"0": headline_value}
        for severity in severities:
            if progress:
                progress(f"{loaded.benchmark}/{loaded.split}: {name} severity {severity}")
            curve[str(severity)] = loaded.score(partial(_corrupted, name, severity, seed), None, False).metrics[h]
        out.corruptions[name] = curve
    return out


def check_attack(epsilons: Sequence[float], steps: int) -> None:
    """Refuse a radius outside (0, 1] (a share of the [0, 1] pixel range) or fewer than one step, before any pass."""
    for epsilon in epsilons:
        if not 0 < epsilon <= 1:
            raise ValueError(f"epsilon {epsilon:g} must be in (0, 1], a share of the pixel range (4/255 = 0.0157)")
    if steps < 1:
        raise ValueError(f"an attack takes at least one step, got {steps}")


def parse_epsilons(text: str) -> list[float]:
    """``"1/255,4/255"`` or ``"0.004,0.016"`` -> attack radii in (0, 1], each a share of the [0, 1] pixel range."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        top, slash, bottom = part.partition("/")
        try:
            value = float(top) / float(bottom) if slash else float(part)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"epsilon {part!r} is not a number or a fraction such as 4/255") from None
        try:
            check_attack([value], 1)
        except ValueError as e:
            raise ValueError(f"{part!r}: {e}") from None
        out.append(value)
    if not out:
        raise ValueError(f"no epsilon in {text!r}; give radii such as 1/255,4/255")
    return sorted(set(out))


def adversarial_curve(
    loaded: LoadedSplit,
    headline_value: float,
    epsilons: Sequence[float],
    steps: int,
    progress: Progress | None = None,
) -> tuple[dict[str, float] | None, str]:
    """(epsilon -> the headline metric on images moved by PGD of ``steps`` steps within it, "0" clean; or None) and
    what the attack was, or why there is no curve: zero-shot image classification and image-caption retrieval define
    an attacked pass, and gradients must reach the model's pixels."""
    if loaded.attacked is None:
        why = (
            "adversarial examples are measured for zero-shot image classification and image-caption retrieval by an "
            f"embedding model; this run scores {loaded.headline} of {loaded.media}"
        )
        return None, why
    curve = {"0": headline_value}
    for epsilon in epsilons:
        if progress:
            progress(f"{loaded.benchmark}/{loaded.split}: PGD-{steps} at epsilon {describe_epsilon(epsilon)}")
        try:
            curve[epsilon_key(epsilon)] = loaded.attacked(Attack(epsilon, steps)).metrics[loaded.headline]
        except NotApplicable as e:
            return None, str(e)
    return curve, (
        f"PGD-{steps} on the L-inf ball (epsilon of the [0, 1] pixel range), random start, step "
        f"{DEFAULT_STEP_SHARE:g} x epsilon / {steps}, raising the cross-entropy of {loaded.attack_goal}"
    )


def run_eval(
    model: str | os.PathLike[str],
    benchmarks: str | Sequence[str],
    *,
    data: str | Path | None = None,
    splits: Sequence[str] | None = None,
    templates: str | None = None,
    with_robustness: bool = False,
    epsilons: Sequence[float] = (),
    attack_steps: int = ATTACK_STEPS,
    seed: int = 0,
    batch_size: int = 64,
    n_resamples: int = 1000,
    meteor: bool = True,
    command: str | None = None,
    progress: Progress | None = None,
    precision: str = "auto",
    judges: dict[str, str] | None = None,
    media_dir: str | Path | None = None,
) -> ResultFile:
    """Evaluate ``model`` (a model or run directory, HF id or model name) on ``benchmarks``; ``splits`` overrides
    each one's defaults.

    ``precision``: auto runs the model under bf16 autocast where the CPU has native bf16, else in fp32; the
    result file's provenance records which (bf16 moves metrics in about the third decimal). ``judges``: models a
    benchmark scores with (name -> path), such as shapes-generation's scene checker; ``media_dir``: where a benchmark
    may write what the model made (generated images), shown as examples. ``epsilons``: an adversarial curve of
    zero-shot image classification and image-caption retrieval, the images moved by PGD of ``attack_steps`` steps at
    each radius.

    A benchmark split the model or data is not eligible for (:class:`NotApplicable`: a capability the model lacks,
    nothing of the kind the benchmark scores) is recorded in ``skipped`` with the reason and the others run; when
    none can run, :class:`NotApplicable` is raised with every reason. Other errors (a missing file, a bad row) stop
    the run."""
    if not isinstance(model, (str, os.PathLike)):  # str() of an nn.Module would be taken as a path
        raise TypeError(
            f"run_eval takes a model directory, run directory, Hugging Face id or model name, got a "
            f"{type(model).__name__} object; save an in-memory model first with polymodal.models.save_model(dir, "
            "model, processors) and pass dir"
        )
    names = parse_benchmarks(benchmarks)
    check_attack(epsilons, attack_steps)
    choice = choose_precision(precision, "cpu")
    ctx = EvalContext(
        model=str(model),
        data=Path(data) if data is not None else None,
        templates=templates,
        seed=seed,
        batch_size=batch_size,
        n_resamples=n_resamples,
        meteor=meteor,
        judges=dict(judges or {}),
        media_dir=Path(media_dir) if media_dir is not None else None,
    )
    _ = ctx.backend  # load the model first: a wrong model path fails before any data is read
    results: list[Result] = []
    skipped: list[Skipped] = []
    for name in names:
        bench = BENCHMARKS[name]
        for split in splits or bench.splits:
            torch.manual_seed(seed)
            try:
                loaded = bench.load(ctx, split)
            except NotApplicable as e:
                skipped.append(Skipped(benchmark=name, split=split, reason=str(e)))
                continue
            if progress:  # announced once it is known to run
                progress(f"{name}/{split}")
            with torch.inference_mode(), choice.autocast("cpu"):
                scored = loaded.score(None, None, True)
                value = scored.metrics[loaded.headline]
                rob = robustness(loaded, value, seed, progress=progress) if with_robustness else None
                if epsilons:
                    rob = rob or Robustness(metric=loaded.headline)
                    curve, how = adversarial_curve(loaded, value, epsilons, attack_steps, progress)
                    if curve is None:
                        rob.skipped = {**(rob.skipped or {}), "adversarial examples": how}
                    else:
                        rob.adversarial, rob.attack = curve, how
            results.append(
                Result(
                    benchmark=name,
                    split=split,
                    headline=loaded.headline,
                    also=[name for name in loaded.also if name in scored.metrics],
                    n=scored.n,
                    unit=scored.unit,
                    metrics=scored.metrics,
                    ci95=scored.ci95,
                    details=scored.details,
                    robustness=rob,
                    examples=scored.examples,
                )
            )
    if not results:
        reasons = describe_skipped(skipped)
        raise NotApplicable(skipped[0].reason if len(reasons) == 1 else "nothing could run: " + "; ".join(reasons))
    provenance = make_provenance(
        model=str(model),
        model_hash_value=model_hash(ctx.model_dir, ctx.backend.identity),
        data_path=data,
        data_hash_value=data_hash(ctx.files_read, ctx.data if ctx.data is not None and ctx.data.is_dir() else None),
        seed=seed,
        command=command if command is not None else command_line(),
        machine=machine_record(choice),
        judges={
            name: JudgeProvenance(path=ctx.judges[name], hash=model_hash(directory, identity))
            for name, (directory, identity) in sorted(ctx.judges_loaded.items())
        },
    )
    return ResultFile(provenance=provenance, results=results, skipped=skipped)
