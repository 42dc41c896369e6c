"""The runtime variants of an export's towers and which one runs by default on this machine.

``fp32`` is the exported graph. ``int8`` is the same graph with the weights of its MatMul and Gemm nodes quantised to
int8 per output channel (onnxruntime's dynamic quantisation: each activation tensor is quantised per call with one
scale, so no calibration data is needed): the fastest, but an activation with outliers loses precision. ``int8-block``
quantises the MatMul weights to int8 in blocks of 32 along the inner dimension (onnxruntime's MatMulNBits) and
computes in int8 with the activations quantised per block of 32 too: slower than ``int8``, closer to fp32.
``int8-mixed`` sits between ``int8`` and ``int8-block``: per-channel activation outliers are first moved into the
weights (SmoothQuant, scales from the export's own sample), then most weight MatMuls run as ``int8`` with
``int8-avx2``'s scales (smoothing enlarges weights, which AVX2's pair sums would clamp); the narrowing ones (inner
dimension larger than the output: a transformer's MLP down-projections, whose post-activation inputs carry the worst
outliers) run as ``int8-block``.

``int8-avx2`` is ``int8`` with each output channel's weight scale widened until no two neighbouring weights can
overflow the 16-bit sums of AVX2's int8 multiply (vpmaddubsw adds the products of adjacent input channels in
pairs and clamps to [-32768, 32767]; CPUs with VNNI or AMX accumulate in 32 bits): on a CPU without VNNI it runs
at int8's speed without int8's clamping error, for about 0.4 bit less weight precision.

Each tower's variants are timed on a fixed sample (the calibration rows int8-mixed's scales come from) with this
process's threads, and compared with PyTorch's fp32 embeddings of that sample and of a larger, varied held-out check
set (:mod:`.check`, never used for calibration); the tower's default is the fastest variant whose worst row keeps
cosine >= ``COSINE_FLOOR`` on both and that beats fp32 by ``SPEEDUP_MARGIN`` (so timing noise cannot flip the
choice). Both sets and their PyTorch embeddings are saved with the export, so the choice can be made again on another
machine without the PyTorch model.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.export.source import ExportError, without_notes
from polymodal.hardware import bf16_native, cpu_info, isa_caps

VARIANTS = ("fp32", "int8", "int8-avx2", "int8-mixed", "int8-block")
COSINE_FLOOR = 0.999
SPEEDUP_MARGIN = 1.1
TIE_MARGIN = 1.05  # accurate variants this close to the fastest count as equally fast: the most accurate wins
MIN_TIMED_SECONDS = 0.5  # per variant, so that a short sample's best time is not one lucky or unlucky run
MAX_TIMED_ROUNDS = 50
SAMPLE_FILE = "sample.npz"  # per tower: the fixed sample's inputs and PyTorch's fp32 embeddings of it
CHECK_FILE = "check.npz"  # per tower: the held-out check batches' inputs and PyTorch's fp32 embeddings of them
CHOICE_KEY = "variant_choice"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
QUANTIZED_OPS = ("MatMul", "Gemm")
BLOCK_SIZE = 32
PAIR_LIMIT = 127  # int8-avx2: |q0| + |q1| <= 128 after rounding, and 255 x 128 fits int16
SMOOTHING_ALPHA = 0.65  # how much of an activation channel's range moves into the weights (SmoothQuant's alpha)


def variant_file(fp32_file: str, variant: str) -> str:
    """``image_encoder.onnx`` -> ``image_encoder.int8.onnx``; fp32 is the exported file itself."""
    return fp32_file if variant == "fp32" else fp32_file.removesuffix(".onnx") + f".{variant}.onnx"


def make_session(path: Path, threads: int, optimization: str = "all", spinning: bool = True) -> Any:
    """An onnxruntime CPU session on ``threads`` intra-op threads (one inter-op thread: the towers are sequential
    graphs) with graph optimisation ``optimization`` (one of OPTIMIZATION_LEVELS). ``spinning=False``: its threads
    sleep as soon as a run ends instead of spin-waiting for the next, leaving the cores to other work in the
    process (torch's own threads)."""
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ExportError(f"optimization {optimization!r}: choose one of {', '.join(OPTIMIZATION_LEVELS)}")
    if threads < 1:
        raise ExportError(f"threads {threads}: give a whole number >= 1")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _weight_nodes(source: Path, ops: tuple[str, ...]) -> tuple[Any, list[str]]:
    """The graph at ``source`` and its ``ops`` nodes whose second input is a weight. MatMuls of two activations
    (attention scores) stay fp32: quantising both sides costs accuracy for little speed."""
    import onnx

    model = onnx.load(str(source))
    # The exporter's shape annotations can disagree with onnx's own inference, which the quantisers re-run.
    del model.graph.value_info[:]
    weights = {init.name for init in model.graph.initializer}
    return model, [n.name for n in model.graph.node if n.op_type in ops and n.input[1] in weights]


def quantize_int8(source: Path, target: Path, feeds: dict[str, np.ndarray]) -> int:
    """Write ``source`` with its weight MatMul/Gemm nodes quantised to int8 (per channel, dynamic activations) to
    ``target``; returns how many nodes were quantised (0: nothing to quantise, nothing written)."""
    model, nodes = _weight_nodes(source, QUANTIZED_OPS)
    if nodes:
        _dynamic_int8(model, target, nodes)
    return len(nodes)


def quantize_int8_avx2(source: Path, target: Path, feeds: dict[str, np.ndarray]) -> int:
    """Write ``source`` to ``target`` quantised as ``int8``, then each weight's per-channel scale widened so that
    adjacent input channels' weights of like sign sum to at most PAIR_LIMIT steps (see the module docstring);
    returns how many nodes were quantised (0: nothing quantised)."""
    model, nodes = _weight_nodes(source, QUANTIZED_OPS)
    if not nodes:
        return 0
    weights = _weights_of(model, nodes)
    _dynamic_int8(model, target, nodes)
    return _widen_to_pair_safe(target, weights)


def _weights_of(model: Any, nodes: list[str]) -> dict[str, np.ndarray]:
    """The fp32 weights (second inputs) of ``model``'s nodes named ``nodes``, by initializer name."""
    from onnx import numpy_helper

    named = set(nodes)
    wanted = {node.input[1] for node in model.graph.node if node.name in named}
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name in wanted}


def _widen_to_pair_safe(target: Path, weights: dict[str, np.ndarray]) -> int:
    """Requantise every int8 weight of the dynamically quantised graph at ``target`` from its fp32 values in
    ``weights`` with :func:`_pair_safe_scale`, in place; returns how many (the graph's int8 MatMuls)."""
    import onnx
    from onnx import numpy_helper

    quantized = onnx.load(str(target))
    inits = {init.name: init for init in quantized.graph.initializer}
    rescaled = 0
    for node in quantized.graph.node:
        if node.op_type != "MatMulInteger" or node.input[1] not in inits:
            continue
        name = node.input[1].removesuffix("_quantized")
        weight = weights.get(name)
        quantized_shape = tuple(inits[node.input[1]].dims)
        if weight is None or weight.shape != quantized_shape or weight.ndim != 2 or f"{name}_scale" not in inits:
            raise ExportError(
                f"pair-safe int8: no fp32 weight of its shape or no scale for {node.input[1]} (did onnxruntime rename "
                "them?)"
            )
        scale = _pair_safe_scale(weight)
        values = np.clip(np.round(weight / scale), -127, 127).astype(np.int8)
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(values, node.input[1]))
        inits[f"{name}_scale"].CopyFrom(numpy_helper.from_array(scale, f"{name}_scale"))
        rescaled += 1
    onnx.save(quantized, str(target))
    return rescaled


def _pair_safe_scale(weight: np.ndarray) -> np.ndarray:
    """Per output column of a (inner, output) weight: the int8 scale max|w| / 127, widened where the weights at inner
    positions 2i and 2i+1 share a sign and sum to more than PAIR_LIMIT steps (of opposite signs, the pair's sum is
    no larger than its larger product)."""
    padded = np.vstack([weight, np.zeros((len(weight) % 2, weight.shape[1]))]).astype(np.float64)
    even, odd = padded[0::2], padded[1::2]
    like_sign_sum = np.where(even * odd > 0, np.abs(even) + np.abs(odd), 0.0).max(axis=0)
    scale = np.maximum(np.abs(padded).max(axis=0) / 127, like_sign_sum / PAIR_LIMIT)
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


def quantize_int8_block(source: Path, target: Path, feeds: dict[str, np.ndarray]) -> int:
    """Write ``source`` with its weight MatMul nodes as MatMulNBits (8-bit weights in blocks of BLOCK_SIZE, int8
    compute: accuracy level 4) to ``target``; returns how many nodes were quantised (0: nothing written)."""
    model, nodes = _weight_nodes(source, ("MatMul",))
    if nodes:
        _block_int8(model, target, nodes)
    return len(nodes)


def quantize_int8_mixed(source: Path, target: Path, feeds: dict[str, np.ndarray]) -> int:
    """Write ``source`` to ``target`` with its weight MatMuls smoothed (each input channel's range on ``feeds``, the
    tower's sample, shared with the weights) and quantised: narrowing MatMuls and Gemms (which dynamic quantisation
    leaves fp32) as int8 blocks, the rest int8 per channel with pair-safe scales; returns how many nodes were
    quantised (0: nothing written)."""
    model, nodes = _weight_nodes(source, QUANTIZED_OPS)
    if not nodes:
        return 0
    weights = {init.name: init for init in model.graph.initializer}
    by_name = {node.name: node for node in model.graph.node}
    blocks = [n for n in nodes if by_name[n].op_type == "Gemm" or _is_narrowing(weights[by_name[n].input[1]])]
    per_channel = [n for n in nodes if n not in blocks]
    _smooth(model, [by_name[n] for n in per_channel], feeds)
    if per_channel:
        smoothed = _weights_of(model, per_channel)
        _dynamic_int8(model, target, per_channel)
        _widen_to_pair_safe(target, smoothed)  # smoothing enlarges weights: AVX2's pair sums would clamp more
    if blocks:
        import onnx

        # The block quantiser takes every MatMul with a constant weight still in the graph: ``blocks`` (a Gemm after
        # dynamic quantisation has become MatMul + Add).
        _block_int8(onnx.load(str(target)) if per_channel else model, target, blocks)
    return len(nodes)


def _dynamic_int8(model: Any, target: Path, nodes: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with without_notes("", "Please consider to run pre-processing before quantization"):
        quantize_dynamic(model, target, weight_type=QuantType.QInt8, per_channel=True, nodes_to_quantize=nodes)


def _block_int8(model: Any, target: Path, nodes: list[str]) -> None:
    name = "onnxruntime.quantization.matmul_nbits_quantizer"
    # Its import calls logging.basicConfig; it logs every node, and as an error each node it leaves (a Gemm) as is.
    with without_notes(name, "Unsupported operator", below=logging.WARNING):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(
            model, bits=8, block_size=BLOCK_SIZE, is_symmetric=True, accuracy_level=4, nodes_to_include=nodes
        )
        quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def _is_narrowing(weight: Any) -> bool:
    """A 2-D (inner, output) weight with inner > output."""
    return len(weight.dims) == 2 and weight.dims[0] > weight.dims[1]


def _smooth(model: Any, nodes: list[Any], feeds: dict[str, np.ndarray]) -> None:
    """SmoothQuant in place: for each activation feeding ``nodes`` (MatMuls with 2-D weights), per input channel j
    s_j = max|x_j| ** alpha / max|w_j| ** (1 - alpha) over the sample ``feeds`` and the weights it feeds; the
    activation is divided by s (a Mul before its MatMuls) and each weight's row j multiplied by s_j, so the product
    is unchanged in exact arithmetic and the activation's outlier channels shrink before it is quantised per tensor."""
    from onnx import helper, numpy_helper

    weights = {init.name: init for init in model.graph.initializer}
    groups: dict[str, list[Any]] = {}
    for node in nodes:
        if len(weights[node.input[1]].dims) == 2:
            groups.setdefault(node.input[0], []).append(node)
    if not groups:
        return
    ranges = _channel_ranges(model, list(groups), feeds)
    first_user = {}
    for activation, users in groups.items():
        rows = [numpy_helper.to_array(weights[node.input[1]]) for node in users]
        weight_range = np.max([np.abs(w).max(axis=1) for w in rows], axis=0)
        act_range = ranges[activation]
        scale = np.maximum(act_range, 1e-5) ** SMOOTHING_ALPHA / np.maximum(weight_range, 1e-5) ** (1 - SMOOTHING_ALPHA)
        scale = np.where((act_range > 0) & (weight_range > 0), scale, 1.0).astype(np.float32)
        for node, w in zip(users, rows):
            name = f"{node.input[1]}_smoothed_{node.name}"
            model.graph.initializer.append(numpy_helper.from_array((w * scale[:, None]).astype(np.float32), name))
            node.input[1] = name
        smoothed = f"{activation}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array(1 / scale, f"{smoothed}_inverse_scale"))
        first_user[users[0].name] = helper.make_node(
            "Mul", [activation, f"{smoothed}_inverse_scale"], [smoothed], name=f"{smoothed}_mul"
        )
        for node in users:
            node.input[0] = smoothed
    ordered = []
    for node in model.graph.node:
        if node.name in first_user:
            ordered.append(first_user[node.name])
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def _channel_ranges(model: Any, activations: list[str], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor in ``activations`` when ``model`` runs on ``feeds``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inner = [name for name in activations if name not in feeds]
    outputs = {output.name for output in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in inner if n not in outputs
    )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(inner, session.run(inner, feeds)))
    values.update({name: feeds[name] for name in activations if name in feeds})
    return {name: np.abs(v.reshape(-1, v.shape[-1])).max(axis=0) for name, v in values.items()}


# variant -> how it is built from the fp32 graph and the tower's sample feeds
QUANTIZERS = {
    "int8": quantize_int8,
    "int8-avx2": quantize_int8_avx2,
    "int8-mixed": quantize_int8_mixed,
    "int8-block": quantize_int8_block,
}


def save_sample(directory: Path, samples: dict[str, tuple[dict[str, np.ndarray], np.ndarray]]) -> None:
    """``samples``: per modality, the graph's feeds and PyTorch's fp32 embeddings of them."""
    arrays = {}
    for modality, (feeds, embeds) in samples.items():
        arrays.update({f"{modality}/{name}": value for name, value in feeds.items()})
        arrays[f"{modality}/embeds"] = embeds
    np.savez_compressed(directory / SAMPLE_FILE, **arrays)


def load_sample(directory: Path) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray]]:
    """The saved sample per modality; empty for an export made before samples were saved."""
    path = directory / SAMPLE_FILE
    if not path.is_file():
        return {}
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    samples: dict[str, tuple[dict[str, np.ndarray], np.ndarray]] = {}
    for modality in {key.split("/", 1)[0] for key in arrays}:
        feeds = {
            key.split("/", 1)[1]: value
            for key, value in arrays.items()
            if key.startswith(f"{modality}/") and key != f"{modality}/embeds"
        }
        samples[modality] = (feeds, arrays[f"{modality}/embeds"])
    return samples


Batches = list[tuple[dict[str, np.ndarray], np.ndarray]]  # per run: the graph's feeds and PyTorch's embeddings


def save_check(directory: Path, checks: dict[str, Batches]) -> None:
    """``checks``: per modality, its held-out batches (feeds, PyTorch fp32 embeddings)."""
    arrays = {}
    for modality, batches in checks.items():
        for index, (feeds, embeds) in enumerate(batches):
            arrays.update({f"{modality}/{index:04d}/{name}": value for name, value in feeds.items()})
            arrays[f"{modality}/{index:04d}/embeds"] = embeds
    np.savez_compressed(directory / CHECK_FILE, **arrays)


def load_check(directory: Path) -> dict[str, Batches]:
    """The held-out check batches per modality; empty for an export made before the check set."""
    path = directory / CHECK_FILE
    if not path.is_file():
        return {}
    grouped: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    with np.load(path) as data:
        for key in data.files:
            modality, index, name = key.split("/", 2)
            grouped.setdefault(modality, {}).setdefault(index, {})[name] = data[key]
    return {
        modality: [(arrays, arrays.pop("embeds")) for _, arrays in sorted(batches.items())]
        for modality, batches in grouped.items()
    }


def cosines(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    got, want = got.astype(np.float64), want.astype(np.float64)
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
    return (got * want).sum(axis=1) / np.maximum(norms, 1e-12)


def measure(
    sessions: dict[str, Any], feeds: dict[str, np.ndarray], want: np.ndarray, rounds: int, check: Batches | None = None
) -> dict[str, Any]:
    """Per variant: items/s on the sample (best of at least ``rounds`` runs and MIN_TIMED_SECONDS, the variants
    taking turns so a burst of load hits all alike; so ``sessions`` should not spin between runs), the cosine of its
    embeddings to ``want`` (worst row and mean) and, given ``check`` batches, the same on them (``heldout_*``)."""
    outputs = {name: s.run(None, feeds)[0] for name, s in sessions.items()}  # also the warm-up
    best = dict.fromkeys(sessions, float("inf"))
    spent = dict.fromkeys(sessions, 0.0)
    runs = dict.fromkeys(sessions, 0)

    def timed_enough(name: str) -> bool:
        return runs[name] >= rounds and (spent[name] >= MIN_TIMED_SECONDS or runs[name] >= MAX_TIMED_ROUNDS)

    while pending := [name for name in sessions if not timed_enough(name)]:
        for name in pending:
            start = time.perf_counter()
            sessions[name].run(None, feeds)
            took = time.perf_counter() - start
            best[name], spent[name], runs[name] = min(best[name], took), spent[name] + took, runs[name] + 1
    items = len(want)
    result = {}
    for name, session in sessions.items():
        cos = cosines(outputs[name], want)
        result[name] = {
            "items_per_second": round(items / best[name], 2),
            "timed_runs": runs[name],
            "cosine_min": round(float(cos.min()), 6),
            "cosine_mean": round(float(cos.mean()), 6),
        }
        if check:
            held = np.concatenate([cosines(session.run(None, f)[0], w) for f, w in check])
            result[name].update(
                heldout_cosine_min=round(float(held.min()), 6),
                heldout_cosine_mean=round(float(held.mean()), 6),
                heldout_rows=len(held),
            )
    return result


def worst_cosine(figures: dict[str, Any]) -> float:
    """The worst row over the sample and, where measured, the held-out check set."""
    return min(figures["cosine_min"], figures.get("heldout_cosine_min", 1.0))


def pick(measured: dict[str, dict[str, Any]]) -> str:
    """The fastest variant that keeps cosine >= COSINE_FLOOR on every row (sample and held-out check set) and beats
    fp32 by SPEEDUP_MARGIN (of those within TIE_MARGIN of the fastest, the most accurate); fp32 otherwise."""
    floor = measured["fp32"]["items_per_second"] * SPEEDUP_MARGIN
    speed = {name: m["items_per_second"] for name, m in measured.items()}
    fast = [
        name
        for name, m in measured.items()
        if name != "fp32" and worst_cosine(m) >= COSINE_FLOOR and speed[name] >= floor
    ]
    if not fast:
        return "fp32"
    fastest = max(speed[name] for name in fast)
    tied = [name for name in fast if speed[name] * TIE_MARGIN >= fastest]
    return max(tied, key=lambda name: (worst_cosine(measured[name]), speed[name]))


def check_default(default: str) -> None:
    if default != "auto" and default not in VARIANTS:
        raise ExportError(f"default variant {default!r}: choose auto or one of {', '.join(VARIANTS)}")


def choose_variants(
    directory: Path,
    manifest: dict[str, Any],
    parts: dict[str, str],
    *,
    threads: int,
    default: str = "auto",
    rounds: int = 3,
) -> dict[str, Any]:
    """Time and check every variant of every tower in ``directory`` that has a saved sample, record the figures and
    each tower's default in ``manifest`` (returned; the caller writes it). ``default`` other than ``auto`` forces
    that variant wherever the tower has it (its figures are recorded all the same)."""
    check_default(default)
    samples = load_sample(directory)
    if not samples:
        raise ExportError(f"{directory}: no {SAMPLE_FILE}; export again to measure the variants")
    checks = load_check(directory)
    for modality, part in parts.items():
        if part not in manifest or modality not in samples:
            continue
        entry = manifest[part]
        files = {v: variant_file(entry["file"], v) for v in VARIANTS}
        present = {v: f for v, f in files.items() if (directory / f).is_file()}
        feeds, want = samples[modality]
        # Sessions whose threads sleep after a run: the variants take turns, and a spinning session's threads would
        # take the cores from the next one's run (on the demo CLIP: 204-435 items/s by turn, 627-642 without).
        sessions = {v: make_session(directory / f, threads, spinning=False) for v, f in present.items()}
        measured = measure(sessions, feeds, want, rounds, checks.get(modality, []))
        entry["variants"] = {
            name: {"file": file, **measured[name], **_built(entry, name)} for name, file in present.items()
        }
        entry["default"] = default if default in present else pick(measured)
    held_out = f" and every row of the held-out {CHECK_FILE}" if checks else f" (no {CHECK_FILE}: an older export)"
    manifest[CHOICE_KEY] = {
        "rule": (
            f"fastest variant with cosine >= {COSINE_FLOOR} to PyTorch fp32 on every {SAMPLE_FILE} row{held_out}, "
            f"and >= {SPEEDUP_MARGIN}x fp32's items/s on {SAMPLE_FILE} (within {TIE_MARGIN}x of the fastest: the "
            "most accurate); else fp32"
        ),
        "forced": None if default == "auto" else default,
        "threads": threads,
        "optimization": "all",
        "rounds": rounds,  # at least; then at least MIN_TIMED_SECONDS per variant (each records its timed_runs)
        "min_seconds": MIN_TIMED_SECONDS,
        "machine": this_machine(),
        "bf16_native": bf16_native("cpu"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return manifest


def this_machine() -> str:
    """What onnxruntime's kernels, and so a variant choice, depend on: the CPU, and whether its CPUID is masked to
    AVX2 (``benchmarks/avx2_only.sh``; torch's own ISA caps do not change onnxruntime's kernels)."""
    masked = " with CPUID masked to AVX2" if "LD_PRELOAD" in isa_caps() else ""
    return cpu_info().describe() + masked


def chosen_elsewhere(manifest: dict[str, Any]) -> str | None:
    """Where the export's variants were chosen when that is not this machine; None when they were chosen here, by
    hand (``--default``) or never (an export without variants)."""
    recorded = manifest.get(CHOICE_KEY)
    if not recorded:
        return None
    forced = recorded.get("forced")
    towers = [entry for entry in manifest.values() if isinstance(entry, dict) and "variants" in entry]
    if forced and all(entry.get("default") == forced for entry in towers):
        return None  # every tower runs the variant asked for, wherever it was measured
    machine = recorded.get("machine")
    return machine if machine and machine != this_machine() else None


def _built(entry: dict[str, Any], name: str) -> dict[str, Any]:
    """What building the variant recorded (e.g. how many nodes were quantised), kept across re-choosing."""
    return {k: v for k, v in entry.get("variants", {}).get(name, {}).items() if k == "quantized_nodes"}
