"""Data layer: sample schema, readers, decoding, transforms, collate, ShapesWorld."""

from polymodal.data.errors import BadSampleError, BadSampleLog
from polymodal.data.schema import QA, MediaRef, Modality, Sample, ShardMember, Statement

__all__ = ["QA", "BadSampleError", "BadSampleLog", "MediaRef", "Modality", "Sample", "ShardMember", "Statement"]
