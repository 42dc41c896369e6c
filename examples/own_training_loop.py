"""polymodal as a library: a CLIP-style dual encoder composed from registered parts, trained by a plain PyTorch loop
with polymodal's data pipeline and loss, scored with its retrieval metrics, saved so that ``polymodal.load``, the
CLI (``classify``, ``eval``, ``index``, ``serve``) and ``run_eval`` use it. docs/library.md walks through it.

    .venv/bin/python examples/own_training_loop.py --out runs/own-loop [--steps 300] [--loss siglip]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import polymodal
from polymodal.data.dataset import MultimodalDataset
from polymodal.data.processors import ImageProcessor, TextProcessor
from polymodal.data.readers import read_manifest
from polymodal.data.shapes import generate_shapesworld
from polymodal.data.text import train_tokenizer
from polymodal.data.transforms import Augment, ImagePreprocess
from polymodal.evaluate.runner import run_eval
from polymodal.metrics import retrieval_metrics
from polymodal.models import build_model, save_model
from polymodal.modules.losses import LOSSES

IMAGE_SIZE, MAX_LENGTH = 32, 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="Where the data and the model go")
    parser.add_argument("--n", type=int, default=1000, help="ShapesWorld images to generate")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--loss", default="clip", help="A registered contrastive loss: clip or siglip")
    args = parser.parse_args()
    torch.manual_seed(0)

    # 1. Data: any format the readers know becomes Samples (here ShapesWorld's JSONL manifests).
    data = args.out / "shapes"
    if not (data / "shapesworld.json").is_file():
        generate_shapesworld(data, n=args.n, seed=0, progress=False)
    train, test = (list(read_manifest(data / f"{split}.jsonl", strict=True)) for split in ("train", "test"))

    # 2. Processors turn a Sample's references into tensors; a saved model keeps them, so loading reproduces them.
    tokenizer = train_tokenizer([t for s in train for t in s.text], vocab_size=512, kind="wordlevel")
    preprocess = ImagePreprocess(image_size=IMAGE_SIZE)
    processors = {
        "image": ImageProcessor(preprocess, Augment(random_resized_crop=True, scale=(0.8, 1.0))),  # in training only
        "text": TextProcessor(tokenizer, MAX_LENGTH),
    }

    # 3. The model: a config of registered parts (`polymodal models` lists them with their parameters).
    model = build_model(
        {
            "kind": "embedding",
            "encoders": {
                "image": {
                    "name": "vit",
                    "params": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 64, "depth": 2},
                },
                "text": {
                    "name": "transformer_text",
                    "params": {"vocab_size": tokenizer.vocab_size, "width": 64, "depth": 2, "max_length": MAX_LENGTH},
                },
            },
            "embed_dim": 64,
        }
    )
    loss_fn = LOSSES.build(args.loss)  # learns its temperature: its parameters go to the optimizer too
    optimizer = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-3, weight_decay=0.05)

    # 4. Your loop: a dataset of Samples and processors, batches of {modality: (tensor, mask)}.
    dataset = MultimodalDataset(train, processors, text_mode="random", seed=0)  # one random caption per image
    loader = DataLoader(dataset, batch_size=64, shuffle=True, collate_fn=dataset.collate_fn, drop_last=True)
    model.train()
    step, epoch = 0, 0
    while step < args.steps:
        dataset.set_epoch(epoch)  # new augmentations and captions each epoch, the same for the same seed
        for batch in loader:
            features = model(batch.inputs)  # modality -> (B, embed_dim) unit vectors
            loss = loss_fn(features["image"], features["text"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step % 50 == 0 or step == args.steps:
                print(f"step {step}: loss {loss.item():.3f}", flush=True)
            if step == args.steps:
                break
        epoch += 1

    # 5. Evaluate with polymodal's metrics: every caption of every test image (text_owner: caption -> its image).
    model.eval()
    inference = {m: p.for_inference() for m, p in processors.items()}
    test_set = MultimodalDataset(test, inference, text_mode="all")
    images, texts, owners = [], [], []
    with torch.no_grad():
        for batch in DataLoader(test_set, batch_size=64, collate_fn=test_set.collate_fn):
            features = model(batch.inputs)
            owners.append(batch.text_owner + sum(len(x) for x in images))
            images.append(features["image"])
            texts.append(features["text"])
    metrics = retrieval_metrics(torch.cat(images), torch.cat(texts), torch.cat(owners).numpy())
    print("test retrieval:", {k: round(v, 3) for k, v in metrics.items() if k.endswith(("R@1", "R@5"))})

    # 6. Save with the inference processors and the learned temperature (zero-shot probabilities use it).
    directory = save_model(args.out / "model", model, inference, logit_scales={"image-text": loss_fn})
    loaded = polymodal.load(directory, precision="fp32")
    picture = test[0].image
    print("classify:", loaded.classify(picture, ["a red circle", "a blue square", test[0].text[0]])[0][:2])
    result = run_eval(directory, "shapes-retrieval", data=data, splits=["test"], n_resamples=100, precision="fp32")
    print("polymodal eval, t2i R@1:", round(result.results[0].metrics["t2i_R@1"], 3))


if __name__ == "__main__":
    main()
