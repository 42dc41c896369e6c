"""What a locked pretrained text tower buys (LiT): shapes-lit (MiniLM, frozen) against the same
embedding model with a text transformer trained from scratch (shapes-clip without hard negatives:
same image tower, steps, batch and learning rate), on ShapesWorld captions as trained and on
paraphrases whose colour and shape words never occur in training (``test_paraphrase``).

    .venv/bin/python benchmarks/lit_vs_scratch.py --steps 400 [--data DIR] [--out DIR] [--precision auto]

Prints image<->text recall@1 and zero-shot colour-shape accuracy (64 classes, one-object images)
with the training words and with synonyms, for both models.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from polymodal.data.shapes import generate_shapesworld, is_complete
from polymodal.data.shapes_paraphrase import synonym_class_names, write_paraphrase_split
from polymodal.hardware import choose_precision, machine_header


def train(recipe: str, out: Path, data: Path, steps: int, precision: str, extra: list[str]) -> Path:
    from polymodal.models import find_model_dir
    from polymodal.train.recipe import load_recipe
    from polymodal.train.run import run_recipe

    overrides = [
        f"data.path={data}",
        f"train.steps={steps}",
        f"train.warmup_steps={max(1, steps // 10)}",
        f"train.eval_every={steps}",
        f"train.precision={precision}",
        *extra,
    ]
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    run_recipe(load_recipe(recipe, overrides), out, progress=True)  # a packaged recipe, by name
    print(f"{recipe}: trained {steps} steps in {time.perf_counter() - started:.0f} s")
    return find_model_dir(out)


def zero_shot(model_dir: Path, data: Path, split: str, class_names: list[str], templates: list[str]) -> float:
    import polymodal
    from polymodal.data.readers import read_manifest
    from polymodal.data.shapes import COLORS, SHAPES

    samples = [s for s in read_manifest(data / f"{split}.jsonl") if len(s.metadata["objects"]) == 1]
    truth = [f"{s.metadata['objects'][0]['color']} {s.metadata['objects'][0]['shape']}" for s in samples]
    originals = [f"{c} {s}" for c in COLORS for s in SHAPES]
    predictions = polymodal.load(model_dir).classify(
        [s.image for s in samples], class_names, templates=templates, top_k=1
    )
    return sum(originals[class_names.index(p[0][0])] == t for p, t in zip(predictions, truth)) / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--data", type=Path, default=Path("runs/lit-bench/shapes"))
    parser.add_argument("--out", type=Path, default=Path("runs/lit-bench"))
    parser.add_argument(
        "--precision", default="auto", help="train.precision: auto is bf16 where the CPU runs it natively"
    )
    args = parser.parse_args()
    precision = choose_precision(args.precision, "cpu").precision
    print(machine_header(precisions=[precision]))  # CPU, flags, threads and the matmul peak of the precision trained in

    from polymodal.data.shapes import COLORS, SHAPES
    from polymodal.evaluate.runner import run_eval

    if not is_complete(args.data, 2000, 0, 64):
        generate_shapesworld(args.data, 2000, seed=0, image_size=64, progress=False)
    for split in ("test", "test_novel"):
        write_paraphrase_split(args.data, split)
    models = {
        "LiT (MiniLM locked)": train("shapes-lit", args.out / "lit", args.data, args.steps, precision, []),
        "text tower from scratch": train(
            "shapes-clip", args.out / "scratch", args.data, args.steps, precision, ["objective.hard_negatives=null"]
        ),
    }
    originals = [f"{c} {s}" for c in COLORS for s in SHAPES]
    header = ["model", "split", "i2t R@1", "t2i R@1", "i2t R@1 para", "t2i R@1 para", "zero-shot", "zero-shot synonyms"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, model_dir in models.items():
        for split in ("test", "test_novel"):
            doc = run_eval(
                str(model_dir),
                "shapes-retrieval",
                data=args.data,
                splits=[split, f"{split}_paraphrase"],
                n_resamples=10,
            )
            plain, para = (r.metrics for r in doc.results)
            zs = zero_shot(model_dir, args.data, split, originals, ["a picture with a {}"])
            zs_syn = zero_shot(model_dir, args.data, split, synonym_class_names(), ["an image containing a {}"])
            row = [name, split, plain["i2t_R@1"], plain["t2i_R@1"], para["i2t_R@1"], para["t2i_R@1"], zs, zs_syn]
            print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else v for v in row) + " |", flush=True)


if __name__ == "__main__":
    main()
