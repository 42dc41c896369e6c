"""Dataset readers: every format becomes an iterator of :class:`~polymodal.data.schema.Sample`.

Every reader takes ``strict`` (raise :class:`~polymodal.data.errors.BadSampleError` at the
first bad row, naming file, row and field) and ``bad_log`` (lenient mode: skip, count and log
to ``bad_samples.jsonl``). Errors about a whole input file (missing, empty, not JSON) raise in
both modes. Media paths come out absolute and inside the dataset root; shard media as bytes.
"""

from polymodal.data.readers.audiocaps import read_audiocaps
from polymodal.data.readers.cifar import cifar_classes, read_cifar
from polymodal.data.readers.classfolders import read_class_folders
from polymodal.data.readers.clotho import read_clotho
from polymodal.data.readers.coco import KARPATHY_SPLITS, read_coco_captions, read_karpathy
from polymodal.data.readers.dispatch import (
    FORMATS,
    FoundDataset,
    detect_format,
    find_dataset,
    open_dataset,
    open_dataset_with_format,
)
from polymodal.data.readers.esc50 import read_esc50
from polymodal.data.readers.kinetics import read_kinetics
from polymodal.data.readers.manifest import read_manifest
from polymodal.data.readers.msrvtt import read_msrvtt
from polymodal.data.readers.vqa import DEFAULT_IMAGE_PATTERN, read_vqa
from polymodal.data.readers.webdataset import expand_shards, read_shards, write_shards

__all__ = [
    "DEFAULT_IMAGE_PATTERN",
    "FORMATS",
    "KARPATHY_SPLITS",
    "cifar_classes",
    "FoundDataset",
    "detect_format",
    "find_dataset",
    "expand_shards",
    "open_dataset",
    "open_dataset_with_format",
    "read_audiocaps",
    "read_cifar",
    "read_coco_captions",
    "read_class_folders",
    "read_clotho",
    "read_esc50",
    "read_karpathy",
    "read_kinetics",
    "read_manifest",
    "read_msrvtt",
    "read_shards",
    "read_vqa",
    "write_shards",
]
