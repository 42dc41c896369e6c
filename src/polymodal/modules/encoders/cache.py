"""Memoised outputs of a frozen (locked) encoder, per input sample: :class:`CachedEncoder` wraps the tower.

A locked tower (LiT's image tower, a frozen pretrained backbone under a trained fusion) computes
the same output for the same input at every step: on a CPU a pretrained tower can cost more than
everything that trains. :class:`FeatureCache` keys each sample by a digest of its exact input bytes
(with its mask, shape and device, the autocast dtype and whether inference mode is on), computes only
the samples it has not seen, in one batch, and returns stored outputs for the rest, so each distinct
image costs one forward pass.

Stores are shared by every encoder with the same weights (a fingerprint of its parameters and
buffers): several models built in one process on the same locked tower reuse one another's work while
one of them lives, or until a :meth:`FeatureCache.keep_alive` block ends (the demo's chain of runs).
Outputs are those of the first computation: bit-identical to recomputing in eval mode except for
kernel-level batch-composition effects. The cached encoder must stay frozen; a lookup fails if any
parameter trains again.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from polymodal.chunking import ChunkSizer, map_in_sized_calls
from polymodal.modules.encoders.base import Encoder, EncoderOutput

Entry = tuple[Tensor, Tensor, Tensor | None, tuple[int, int] | None]  # tokens (T, D), pooled (D,), mask (T,), grid
CALL_LIMIT = 256  # the most new samples one encoder call takes; fewer where that is faster per sample
KEPT_SIZERS = 16  # call-size learners kept per store, the latest used


class FeatureCache:
    """A bounded LRU store of one frozen encoder's per-sample outputs (see the module docstring)."""

    # Weak: a store lives as long as some encoder uses it, not as long as the process.
    _shared: ClassVar[weakref.WeakValueDictionary[str, FeatureCache]] = weakref.WeakValueDictionary()
    # Strong references held by the open keep_alive() blocks, innermost last.
    _kept: ClassVar[list[dict[int, FeatureCache]]] = []

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.max_items = max_items
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.hits = self.misses = 0
        # How many new samples one call of the encoder takes, per kind of call (see _sizer): a bf16 training step
        # and an fp32 evaluation, or inputs four times as long, have their own fastest size. The latest KEPT_SIZERS.
        self.call_limit = CALL_LIMIT
        self.sizers: OrderedDict[tuple[Any, ...], ChunkSizer] = OrderedDict()
        # Models may be called from several threads: a lookup must not see another's eviction.
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> FeatureCache:
        return self  # a copied encoder has the same weights, so the same store (and a lock cannot be copied)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_items": self.max_items}  # pickled empty, without its lock

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_items"])  # type: ignore[misc]

    @classmethod
    def for_encoder(cls, encoder: nn.Module, max_items: int) -> FeatureCache:
        """The store shared by every encoder with ``encoder``'s class, settings and weights (created if new);
        its bound is the largest ``max_items`` any of them asked for."""
        trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
        if trainable:
            raise ValueError(
                f"only a frozen encoder can cache its outputs; {len(trainable)} parameters train "
                f"(first: {trainable[0]}); freeze it first"
            )
        key = weights_fingerprint(encoder)
        cache = cls._shared.get(key)
        if cache is None:
            cache = cls._shared[key] = cls(max_items)
        cache.max_items = max(cache.max_items, max_items)
        for kept in cls._kept:
            kept[id(cache)] = cache
        return cache

    @classmethod
    @contextmanager
    def keep_alive(cls) -> Iterator[None]:
        """Within the block, every store an encoder asks for lives until the block ends, not only as long
        as its encoders: runs one after another in one process on the same locked tower (the demo's chain
        of recipes and their evaluations) then compute each input once, instead of once per run."""
        kept: dict[int, FeatureCache] = {}
        cls._kept.append(kept)
        try:
            yield
        finally:
            cls._kept[:] = [k for k in cls._kept if k is not kept]  # by identity: two dicts may be equal

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, encoder: Encoder, x: Tensor, mask: Tensor | None) -> EncoderOutput:
        """``encoder(x, mask)``, computing only the samples not stored yet."""
        if any(p.requires_grad for p in encoder.parameters()):
            raise RuntimeError(
                f"{type(encoder).__name__} caches its outputs but has trainable parameters again; "
                "a cached encoder must stay frozen"
            )
        if x.shape[0] == 0 or x.requires_grad:  # nothing to store; or the caller wants gradients for its input
            return nn.Module.__call__(encoder, x, mask)  # type: ignore[no-any-return]
        host_x = x.detach().cpu().contiguous()  # one device-to-host copy per batch, not one per sample
        host_mask = None if mask is None else mask.detach().cpu().contiguous()
        prefix = self._key_prefix(x)
        keys = [self._key(prefix, host_x[i], None if host_mask is None else host_mask[i]) for i in range(x.shape[0])]
        with self._lock:
            return self._lookup(encoder, keys, x, mask)

    def _lookup(self, encoder: Encoder, keys: list[bytes], x: Tensor, mask: Tensor | None) -> EncoderOutput:
        # Collected before anything is stored: storing this batch's new samples may evict others it needs.
        found = {k: self.entries[k] for k in keys if k in self.entries}
        for k in found:
            self.entries.move_to_end(k)
        todo, new = [], set()  # the first row of each key not stored: a repeated image is computed once
        for i, k in enumerate(keys):
            if k not in found and k not in new:
                new.add(k)
                todo.append(i)
        if todo:
            rows = iter(todo)
            for out in self._compute(encoder, x, mask, todo):
                for j in range(out.pooled.shape[0]):
                    k = keys[next(rows)]
                    found[k] = (
                        out.tokens[j].clone(),
                        out.pooled[j].clone(),
                        None if out.mask is None else out.mask[j].clone(),
                        out.grid,
                    )
                    self._put(k, found[k])
        self.misses += len(todo)
        self.hits += len(keys) - len(todo)  # a repeat within the batch counts as a hit
        entries = [found[k] for k in keys]
        tokens, masks = _padded([e[0] for e in entries], [e[2] for e in entries])
        return EncoderOutput(
            tokens,
            torch.stack([e[1] for e in entries]),
            masks,
            entries[0][3],  # the grid follows from the input shape, which is part of every key
        )

    def _compute(self, encoder: Encoder, x: Tensor, mask: Tensor | None, todo: list[int]) -> list[EncoderOutput]:
        """The encoder's outputs for rows ``todo`` of the batch, in calls of consecutive rows: on a CPU in the size
        measured fastest there for calls like these (:meth:`_sizer`), elsewhere in one call (timing asynchronous
        kernels would measure their launch)."""

        def run(part: Sequence[int]) -> EncoderOutput:
            rows = torch.tensor(part, device=x.device)
            return nn.Module.__call__(encoder, x[rows], None if mask is None else mask[rows])  # type: ignore[no-any-return]

        with torch.no_grad():
            if x.device.type != "cpu":
                return [run(todo)]
            return map_in_sized_calls(self._sizer(x), run, todo)

    def _sizer(self, x: Tensor) -> ChunkSizer:
        """The call-size learner for calls like ``x``'s: its dtype, autocast, inference mode and thread count, and
        its elements per sample to the next power of two (token ids padded to each batch's longest share one)."""
        autocast = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        per_sample = x[0].numel() if x.shape[0] else 0
        kind = (x.dtype, autocast, torch.is_inference_mode_enabled(), torch.get_num_threads(), per_sample.bit_length())
        sizer = self.sizers.get(kind)
        if sizer is None:
            sizer = self.sizers[kind] = ChunkSizer(self.call_limit)
            while len(self.sizers) > KEPT_SIZERS:
                self.sizers.popitem(last=False)
        self.sizers.move_to_end(kind)
        return sizer

    def _put(self, key: bytes, entry: Entry) -> None:
        self.entries[key] = entry
        while len(self.entries) > self.max_items:
            self.entries.popitem(last=False)

    @staticmethod
    def _key_prefix(x: Tensor) -> bytes:
        # The autocast dtype is part of the key: a bf16 training step and an fp32 evaluation give
        # different outputs, and the layers after the tower expect the dtype of their own mode. So is
        # inference mode: a tensor made under it cannot enter a training step's autograd graph later.
        autocast = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else None
        return f"{x.dtype}{tuple(x.shape[1:])}{x.device}{autocast}{torch.is_inference_mode_enabled()}".encode()

    @staticmethod
    def _key(prefix: bytes, row: Tensor, mask: Tensor | None) -> bytes:
        """Digest of one sample (host ``row`` and ``mask``) under the batch's ``prefix``."""
        # SHA-256 runs in hardware on current x86 and ARM CPUs (about twice blake2b's speed here), and
        # hashing the rows' own buffers skips a copy: the digest is a measurable part of a cached step.
        digest = hashlib.sha256(prefix)
        digest.update(row.contiguous().view(torch.uint8).numpy())
        if mask is not None:
            digest.update(mask.contiguous().view(torch.uint8).numpy())
        return digest.digest()


def _padded(tokens: list[Tensor], masks: list[Tensor | None]) -> tuple[Tensor, Tensor | None]:
    """Stack samples' (T_i, D) tokens and (T_i,) masks, padding to the longest (masked out): a tower whose token
    count follows the batch's longest input (a window per 1.6 s of speech) stores samples of different lengths."""
    longest = max(t.shape[0] for t in tokens)
    if all(t.shape[0] == longest for t in tokens):
        return torch.stack(tokens), None if masks[0] is None else torch.stack(masks)  # type: ignore[arg-type]
    if any(m is None for m in masks):
        raise RuntimeError("cached tokens differ in length but the tower gives no token mask to pad them with")
    stacked = tokens[0].new_zeros(len(tokens), longest, tokens[0].shape[-1])
    mask = torch.zeros(len(tokens), longest, dtype=torch.bool, device=tokens[0].device)
    for i, (t, m) in enumerate(zip(tokens, masks)):
        stacked[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = m  # type: ignore[index]
    return stacked, mask


# Attributes that say what a module is doing now, not what it computes.
_STATE_FLAGS = {"training", "grad_checkpointing"}


def weights_fingerprint(module: nn.Module) -> str:
    """A digest of ``module``'s class, settings (every submodule's plain attributes, e.g. ``pooling``),
    parameter and buffer names, shapes and values."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(module).__qualname__.encode())
    for name, sub in module.named_modules():
        settings = {
            k: v
            for k, v in vars(sub).items()
            if not k.startswith("_")
            and k not in _STATE_FLAGS
            and isinstance(v, (bool, int, float, str, tuple, type(None)))
        }
        digest.update(f"{name}{type(sub).__qualname__}{sorted(settings.items())}".encode())
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class CachedEncoder(Encoder):
    """A frozen tower whose outputs come from ``store`` (computed once per distinct input).

    Its state dict is the tower's own (no extra prefix), so a model with a cached tower saves and loads like one
    without. Loading new weights takes the store of those weights: outputs of the old ones are never served.
    """

    def __init__(self, encoder: Encoder, store: FeatureCache) -> None:
        super().__init__()
        if not encoder.frozen:
            raise ValueError(f"only a frozen encoder can cache its outputs; freeze {type(encoder).__name__} first")
        self.inner = encoder
        self.store = store
        self.modality = encoder.modality
        self.output_dim = encoder.output_dim
        self._register_state_dict_hook(_without_inner_prefix)
        self._register_load_state_dict_pre_hook(_with_inner_prefix)
        self.register_load_state_dict_post_hook(_new_weights_new_store)

    @property
    def label(self) -> str:
        return self.inner.label

    def check_inputs(self, x: Tensor, mask: Tensor | None = None) -> None:
        self.inner.check_inputs(x, mask)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        self.check_inputs(x, mask)  # before the inputs are hashed: a wrong input gets the tower's own error
        return self.store.lookup(self.inner, x, mask)

    def blocks(self) -> list[nn.Module]:
        return self.inner.blocks()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # the tower's own attributes (vocab_size, image_size, grid ...)
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None:
                raise
            return getattr(inner, name)


def _without_inner_prefix(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    inner = prefix + "inner."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _with_inner_prefix(state: dict[str, Any], prefix: str, *args: Any) -> None:
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + "inner.")]:
        state[prefix + "inner." + key[len(prefix) :]] = state.pop(key)


def _new_weights_new_store(module: nn.Module, incompatible_keys: Any) -> None:
    module.store = FeatureCache.for_encoder(module.inner, module.store.max_items)  # type: ignore[union-attr]
