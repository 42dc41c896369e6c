"""A training set of WebDataset shards in memory: the rows ``polymodal train`` keeps (media left in the shards as
``ShardMember`` places, ``read_shards(media_in_shard=True)``) against rows holding every member's bytes (how shards
were read before). Writes ``--images`` random ``--size``-pixel JPEGs into shards of ``--per-shard``, reads them both
ways and prints the rows' memory (tracemalloc: what the list of samples holds after reading, and the peak while
reading) and the seconds taken; then decodes ``--decode`` images through each kind of row. The temporary folder
is removed at the end, also on errors.

Run: ``.venv/bin/python benchmarks/shard_rows.py [--images 2000] [--size 224] [--per-shard 500] [--decode 200]``
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from polymodal.data.image import decode_image
from polymodal.data.readers import read_shards, write_shards
from polymodal.data.schema import Sample
from polymodal.hardware import machine_header


def jpegs(count: int, size: int) -> Iterator[Sample]:
    rng = np.random.default_rng(0)
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
        yield Sample(id=str(i), image=buf.getvalue(), label=i % 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--per-shard", type=int, default=500)
    parser.add_argument("--decode", type=int, default=200, help="images decoded through each kind of row")
    args = parser.parse_args()
    print(machine_header(precisions=()))
    with tempfile.TemporaryDirectory(prefix="polymodal-bench-") as tmp:
        paths = write_shards(jpegs(args.images, args.size), str(Path(tmp) / "shard-%06d.tar"), args.per_shard)
        size = sum(Path(p).stat().st_size for p in paths)
        print(f"{args.images:,} JPEGs of {args.size} px in {len(paths)} shards, {size / 2**20:.1f} MiB")
        for in_shard in (False, True):
            tracemalloc.start()
            began = time.perf_counter()
            rows = list(read_shards(paths, media_in_shard=in_shard))
            seconds = time.perf_counter() - began
            held, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            began = time.perf_counter()
            for row in rows[: args.decode]:
                decode_image(row.image)
            per_image = (time.perf_counter() - began) / max(min(args.decode, len(rows)), 1)
            what = "places in the shards (ShardMember)" if in_shard else "the members' bytes"
            print(
                f"rows holding {what}: {len(rows):,} rows hold {held / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB "
                f"while reading), read in {seconds:.2f} s; decode {per_image * 1000:.2f} ms an image"
            )
            del rows


if __name__ == "__main__":
    main()
