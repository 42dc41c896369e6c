"""Fusion probe: how fast each fusion module learns ShapesWorld statements from frozen pretrained towers.

Encodes the train and val statements once with the towers of a CLIP run (cached next to ``--cache``), then
trains only a fusion module + linear head on the cached tokens -- seconds per setting instead of a full
``polymodal train`` -- and prints val statement accuracy during training. ``--fusion reference`` is a
plain pre-norm ``nn.MultiheadAttention`` block (text queries image) to tell a module bug from a hard
optimisation problem. The table in docs/training.md ("Attention fusion wants a lower learning rate") came
from::

    .venv/bin/polymodal demo --out runs/probe --data-only
    .venv/bin/polymodal train recipes/shapes-clip.yaml --out runs/probe/clip --set data.path=runs/probe/shapes \\
        --set train.steps=450 --set train.warmup_steps=45 --set train.precision=bf16
    .venv/bin/python benchmarks/fusion_probe.py --clip runs/probe/clip --data runs/probe/shapes --fusion concat --steps 3000
    .venv/bin/python benchmarks/fusion_probe.py --clip runs/probe/clip --data runs/probe/shapes \\
        --fusion cross_attention --param query=text --lr 1e-4 --steps 3000
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import yaml
from torch import Tensor, nn

from polymodal.data.dataset import MultimodalDataset, statement_samples
from polymodal.data.errors import BadSampleLog
from polymodal.data.readers import read_manifest
from polymodal.data.text import TextTokenizer
from polymodal.models.base import TOKENIZER_DIR, find_model_dir
from polymodal.models.fusion_classifier import encode_modalities
from polymodal.modules.encoders.base import EncoderOutput
from polymodal.modules.fusion import FUSIONS
from polymodal.modules.heads import ClassificationHead
from polymodal.train.recipe import build_recipe_model, load_recipe
from polymodal.train.tasks import classifier_inputs, labels_of

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "shapes-fusion.yaml"


def encode_split(model: nn.Module, recipe, tokenizer: TextTokenizer, split: str, log: BadSampleLog) -> dict[str, Tensor]:
    """Frozen tower outputs for every statement of ``split`` (tokens in fp16 to halve the cache)."""
    rows = statement_samples(list(read_manifest(Path(recipe.data.path) / split, bad_log=log)))
    dataset = MultimodalDataset(rows, recipe.data.image, tokenizer, text_mode="first", max_length=recipe.data.max_length)
    parts: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(dataset), 256):
            batch = dataset.collate_fn([dataset[i] for i in range(start, min(start + 256, len(dataset)))])
            features, _ = encode_modalities(model.encoders, *classifier_inputs(batch))
            text_mask = features["text"].mask
            parts.append({
                "image_tokens": features["image"].tokens.half(), "image_pooled": features["image"].pooled.half(),
                "text_tokens": features["text"].tokens.half(), "text_pooled": features["text"].pooled.half(),
                "text_mask": text_mask, "labels": labels_of(batch)[0],
            })  # fmt: skip
    # Batches pad to their own longest statement: pad every batch's text to the longest overall.
    width = max(p["text_tokens"].shape[1] for p in parts)
    for p in parts:
        extra = width - p["text_tokens"].shape[1]
        p["text_tokens"] = nn.functional.pad(p["text_tokens"], (0, 0, 0, extra))
        p["text_mask"] = nn.functional.pad(p["text_mask"], (0, extra))
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def cached_features(clip: Path, data: Path, cache: Path) -> dict[str, dict[str, Tensor]]:
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    recipe = load_recipe(RECIPE, [f"data.path={data}", f"model.init_from={clip}"])
    tokenizer = TextTokenizer.load(find_model_dir(clip) / TOKENIZER_DIR)
    model = build_recipe_model(recipe, tokenizer.vocab_size, {}).eval()
    log = BadSampleLog(cache.with_suffix(".bad.jsonl"))
    splits = {split: encode_split(model, recipe, tokenizer, getattr(recipe.data, split), log) for split in ("train", "val")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save(splits, tmp)
    tmp.replace(cache)
    return splits


class ReferenceBlock(nn.Module):
    """One pre-norm cross-attention block from torch's own parts: text tokens attend to image tokens."""

    def __init__(self, dim: int, out_dim: int, width: int = 128) -> None:
        super().__init__()
        self.text, self.image = nn.Linear(dim, width), nn.Linear(dim, width)
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
    parser.add_argument("--clip", type=Path, required=True, help="A shapes-clip run (or model) directory.")
    parser.add_argument("--data", type=Path, required=True, help="The ShapesWorld directory it was trained on.")
    parser.add_argument("--cache", type=Path, default=None, help="Feature cache file (default: CLIP/probe_features.pt).")
    parser.add_argument("--fusion", default="concat", help="A registered fusion module, or 'reference'.")
    parser.add_argument("--param", action="append", default=[], help="Fusion parameter key=value (repeatable).")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=450)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--evals", type=int, default=3, help="Val evaluations, evenly spaced.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    splits = cached_features(args.clip, args.data, args.cache or args.clip / "probe_features.pt")
    train, val = splits["train"], splits["val"]
    dim = train["image_tokens"].shape[-1]
    torch.manual_seed(args.seed)
    if args.fusion == "reference":
        fusion: nn.Module = ReferenceBlock(dim, 128)
    else:
        fusion = FUSIONS.build(args.fusion, input_dims={"image": dim, "text": dim}, output_dim=128, **parse_params(args.param))
    head = ClassificationHead(128, 2)
    params = [*fusion.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / args.steps)))
    )

    def logits(split: dict[str, Tensor], idx: Tensor) -> Tensor:
        features = {
            "image": EncoderOutput(split["image_tokens"][idx].float(), split["image_pooled"][idx].float()),
            "text": EncoderOutput(split["text_tokens"][idx].float(), split["text_pooled"][idx].float(), split["text_mask"][idx]),
        }
        present = {m: torch.ones(len(idx), dtype=torch.bool) for m in features}
        fused = fusion(features, present)
        return head(fused if isinstance(fused, Tensor) else fused.pooled)

    def accuracy() -> float:
        fusion.eval(), head.eval()
        with torch.no_grad():
            idx = torch.arange(len(val["labels"]))
            correct = sum((logits(val, chunk).argmax(1) == val["labels"][chunk]).sum().item() for chunk in idx.split(512))
        fusion.train(), head.train()
        return correct / len(idx)

    generator = torch.Generator().manual_seed(args.seed)
    every = max(1, args.steps // args.evals)
    started = time.perf_counter()
    print(f"{args.fusion} {parse_params(args.param)} lr={args.lr}: {len(train['labels'])} train / {len(val['labels'])} val statements")
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(train["labels"]), (args.batch_size,), generator=generator)
        loss = nn.functional.cross_entropy(logits(train, idx), train["labels"][idx])
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % every == 0 or step == args.steps:
            print(f"  step {step:5d}  loss {loss.item():.3f}  val accuracy {accuracy():.3f}  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
