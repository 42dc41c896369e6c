"""Fusion probe: how fast each fusion module learns ShapesWorld statements on a CLIP run's towers.

The image tower of a CLIP run (the ViT of ``shapes-clip`` or the locked ImageNet EfficientNet of
``shapes-clip-imagenet``) encodes every train and val image once (cached next to ``--cache``); then a fusion
module + linear head train on the cached image features and the statements, encoded each step by the CLIP
run's text tower (frozen, or trained at ``--text-lr``). Seconds to a minute per setting instead of a full
``polymodal train``; prints val statement accuracy, overall and per statement type. ``--fusion reference`` is
a plain pre-norm ``nn.MultiheadAttention`` block (text queries image) to tell a module bug from a hard
optimisation problem. The tables in docs/training.md came from::

    .venv/bin/polymodal demo --out runs/probe --data-only
    # "Attention fusion wants a lower learning rate": ViT towers, text frozen, fp32
    .venv/bin/polymodal train shapes-clip --out runs/probe/clip --set data.path=runs/probe/shapes \\
        --set train.steps=450 --set train.warmup_steps=45 --set train.precision=bf16
    .venv/bin/python benchmarks/fusion_probe.py --clip runs/probe/clip --recipe shapes-fusion \\
        --data runs/probe/shapes --fusion cross_attention --param query=text --lr 1e-4 --steps 3000
    # "Statement classifiers ... on the locked tower": ImageNet features, text tower trained, bf16
    .venv/bin/polymodal train shapes-clip-imagenet --out runs/probe/clip-imagenet \\
        --set data.path=runs/probe/shapes --set train.steps=350 --set train.warmup_steps=35 --set train.precision=bf16
    .venv/bin/python benchmarks/fusion_probe.py --clip runs/probe/clip-imagenet --data runs/probe/shapes \\
        --fusion film --lr 3e-4 --text-lr 1e-4 --bf16 --steps 700 [--param kernel=1]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from polymodal.data.dataset import MultimodalDataset, statement_samples
from polymodal.data.errors import BadSampleLog
from polymodal.data.processors import TOKENIZER_DIR, ImageProcessor
from polymodal.data.readers import read_manifest
from polymodal.data.text import TextTokenizer
from polymodal.hardware import machine_header
from polymodal.models import find_model_dir
from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion import FUSIONS
from polymodal.modules.heads import ClassificationHead
from polymodal.train.build import build_recipe_model, recipe_model_config
from polymodal.train.recipe import load_recipe


def encode_split(
    model: nn.Module, recipe, tokenizer: TextTokenizer, split: str, log: BadSampleLog
) -> dict[str, object]:
    """Frozen image features of every image of ``split`` (fp16) and its statements as token ids."""
    images = list(read_manifest(Path(recipe.data.path) / split, bad_log=log))
    dataset = MultimodalDataset(images, {"image": ImageProcessor(recipe.data.image)}, text_mode="first")
    tokens, pooled, grid = [], [], None
    with torch.no_grad():
        for start in range(0, len(dataset), 128):
            batch = dataset.collate_fn([dataset[i] for i in range(start, min(start + 128, len(dataset)))])
            out = model.encoders["image"](*batch.input("image"))
            tokens.append(out.tokens.half())
            pooled.append(out.pooled.half())
            grid = out.grid
    index = {sample.id: i for i, sample in enumerate(images)}
    statements = statement_samples(images)
    ids, mask = tokenizer.encode_batch([s.text[0] for s in statements], recipe.data.max_length)
    return {
        "image_tokens": torch.cat(tokens),
        "image_pooled": torch.cat(pooled),
        "grid": grid,
        "image_index": torch.tensor([index[s.metadata["parent_id"]] for s in statements]),
        "text_ids": ids,
        "text_mask": mask,
        "labels": torch.tensor([int(s.label) for s in statements]),
        "types": [s.statements[0].type or "untyped" for s in statements],
    }


def cached_features(
    clip: Path, recipe_path: Path, data: Path, cache: Path
) -> tuple[nn.Module, dict[str, dict[str, object]]]:
    """The fusion classifier built from ``recipe_path`` (a file, or a packaged recipe's name) on ``clip``'s towers,
    and the cached splits."""
    recipe = load_recipe(recipe_path, [f"data.path={data}", f"model.init_from={clip}"])
    tokenizer = TextTokenizer.load(find_model_dir(clip) / TOKENIZER_DIR)
    model, _transfer = build_recipe_model(recipe, recipe_model_config(recipe, tokenizer.vocab_size))
    model.eval()
    if cache.is_file():
        return model, torch.load(cache, weights_only=True)
    log = BadSampleLog(cache.with_suffix(".bad.jsonl"))
    splits = {
        split: encode_split(model, recipe, tokenizer, getattr(recipe.data, split), log) for split in ("train", "val")
    }
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(splits, tmp)
    tmp.replace(cache)
    return model, splits


class ReferenceBlock(nn.Module):
    """One pre-norm cross-attention block from torch's own parts: text tokens attend to image tokens."""

    def __init__(self, image_dim: int, text_dim: int, out_dim: int, width: int = 128) -> None:
        super().__init__()
        self.text, self.image = nn.Linear(text_dim, width), nn.Linear(image_dim, width)
        self.norm_q, self.norm_kv, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, out_dim))

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> Tensor:
        q, kv = self.text(features["text"].tokens), self.norm_kv(self.image(features["image"].tokens))
        x = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        x = x + self.mlp(self.norm_mlp(x))
        mask = features["text"].mask.unsqueeze(-1).to(x.dtype)
        return self.out((x * mask).sum(1) / mask.sum(1))


def parse_params(pairs: list[str]) -> dict[str, object]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param wants key=value, got {pair!r}")
        params[key] = yaml.safe_load(value)
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clip", type=Path, required=True, help="A shapes-clip or shapes-clip-imagenet run (or model) directory."
    )
    parser.add_argument(
        "--recipe",
        type=Path,
        default=Path("shapes-fusion-imagenet"),
        help="The fusion recipe (a file, or a packaged recipe's name) whose towers (and preprocessing) "
        "to build on the CLIP run's weights.",
    )
    parser.add_argument("--data", type=Path, required=True, help="The ShapesWorld directory it was trained on.")
    parser.add_argument(
        "--cache", type=Path, default=None, help="Feature cache file (default: CLIP/probe-<recipe>.pt)."
    )
    parser.add_argument("--fusion", default="film", help="A registered fusion module, or 'reference'.")
    parser.add_argument("--param", action="append", default=[], help="Fusion parameter key=value (repeatable).")
    parser.add_argument("--lr", type=float, default=3e-4, help="Fusion and head learning rate.")
    parser.add_argument("--text-lr", type=float, default=0.0, help="Text tower learning rate (0: frozen).")
    parser.add_argument("--steps", type=int, default=350)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as the demo trains.")
    parser.add_argument("--evals", type=int, default=4, help="Val evaluations, evenly spaced.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(machine_header(precisions=["bf16" if args.bf16 else "fp32"]))  # CPU, flags, threads, the run's matmul peak

    model, splits = cached_features(
        args.clip, args.recipe, args.data, args.cache or args.clip / f"probe-{args.recipe.stem}.pt"
    )
    train, val = splits["train"], splits["val"]
    text_tower = model.encoders["text"].requires_grad_(args.text_lr > 0).train(args.text_lr > 0)
    dims = {"image": train["image_tokens"].shape[-1], "text": text_tower.output_dim}
    torch.manual_seed(args.seed)
    if args.fusion == "reference":
        fusion: nn.Module = ReferenceBlock(dims["image"], dims["text"], 128)
    else:
        fusion = FUSIONS.build(args.fusion, input_dims=dims, output_dim=128, **parse_params(args.param))
    head = ClassificationHead(128, 2)
    groups = [{"params": [*fusion.parameters(), *head.parameters()], "lr": args.lr}]
    if args.text_lr > 0:
        groups.append({"params": list(text_tower.parameters()), "lr": args.text_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.05)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )

    def logits(split: dict[str, object], idx: Tensor) -> Tensor:
        image = split["image_index"][idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            features = {
                "image": EncoderOutput(
                    split["image_tokens"][image].float(), split["image_pooled"][image].float(), None, split["grid"]
                ),
                "text": text_tower(split["text_ids"][idx], split["text_mask"][idx]),
            }
            present = {m: torch.ones(len(idx), dtype=torch.bool) for m in features}
            fused = fusion(features, present)
            return head(fused if isinstance(fused, Tensor) else fused.pooled).float()

    def accuracy() -> str:
        fusion.eval(), head.eval(), text_tower.eval()
        with torch.no_grad():
            idx = torch.arange(len(val["labels"]))
            correct = torch.cat([logits(val, chunk).argmax(1) == val["labels"][chunk] for chunk in idx.split(512)])
        fusion.train(), head.train(), text_tower.train(args.text_lr > 0)
        by_type: dict[str, list[bool]] = defaultdict(list)
        for kind, ok in zip(val["types"], correct.tolist()):
            by_type[kind].append(ok)
        per_type = "  ".join(f"{kind} {sum(oks) / len(oks):.3f}" for kind, oks in sorted(by_type.items()))
        return f"{correct.float().mean().item():.3f}  ({per_type})"

    generator = torch.Generator().manual_seed(args.seed)
    every = max(1, args.steps // args.evals)
    started = time.perf_counter()
    print(
        f"{args.fusion} {parse_params(args.param)} lr={args.lr} text_lr={args.text_lr} on {args.recipe.name}: "
        f"{len(train['labels'])} train / {len(val['labels'])} val statements"
    )
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train["labels"]), (args.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(logits(train, idx), train["labels"][idx])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        schedule.step()
        if step % every == 0 or step == args.steps:
            print(
                f"  step {step:5d}  loss {loss.item():.3f}  val accuracy {accuracy()}  "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
