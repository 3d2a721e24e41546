"""Measured int8 latency of every U-Net level at every candidate width: the table a channel search reads.

A uniform keep ratio removes the same share of filters everywhere, but on CPUs the time is not
where the MACs are: XNNPACK int8 is per-pixel bound at full resolution (an 8-channel int8 3x3
conv at 128x128 costs 0.9 ms on this project's Xeon, a 16-channel one 1.2 ms) and the deep, wide
levels are cheap. :func:`measure_latency_table` measures where the time is, on this machine:

* for every level (``enc{i}`` + ``dec{i}`` with the up-sampling into it, the ``logits`` conv at
  level 0, the bottleneck last) and every candidate width (the multiples of ``granularity`` below
  the level's width, and the width itself), a small model holding just that level's layers at
  their resolution, fed by int8 inputs shaped as its neighbours' outputs at full width, is
  converted to full-int8 TFLite;
* the whole model too (the anchor of every prediction);
* all of them are loaded, warmed up and timed in interleaved rounds (so drifts in machine load
  hit every candidate alike), batch 1, per thread count; the p50 is kept.

A thinned model's latency is then predicted additively:
``full_ms + sum(level_ms(level, width) - level_ms(level, full width))`` (:meth:`LatencyTable.predict`).
It ignores that a thinner level also feeds fewer channels to its neighbours' first convs, which
:mod:`roverlite.compress.channel_search` reports by measuring the model it chose.

Tables are versioned JSON (``format: roverlite.latency_table``), with the machine, runtime,
thread counts, granularity, input size and architecture they were measured for.

Example:
    >>> table = measure_latency_table(model, granularity=8, threads=(1, 2))   # doctest: +SKIP
    >>> table.save("table.json"); load_latency_table("table.json").predict((8, 32, 64, 128, 256), 1)
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from roverlite._tf import keras, tf
from roverlite.compress.decoder import swap_decoder
from roverlite.compress.resolution import half_resolution
from roverlite.compress.structured import level_widths, thinned_config
from roverlite.deploy.hostinfo import host_info, runtime_version
from roverlite.deploy.latency import percentile
from roverlite.deploy.runtime import TFLITE_BACKENDS, check_threads, tflite_interpreter_class
from roverlite.export.tflite import check_builtin_ops, convert_tflite
from roverlite.io import atomic_write_json
from roverlite.train.modelfile import load_model_file
from roverlite.train.models import create_model, list_models

__all__ = [
    "TABLE_FORMAT",
    "TABLE_VERSION",
    "LatencyTable",
    "architecture_of",
    "candidate_widths",
    "check_table_fits",
    "load_latency_table",
    "measure_latency_table",
    "time_tflite",
    "write_latency_table",
]

logger = logging.getLogger(__name__)

TABLE_FORMAT = "roverlite.latency_table"
TABLE_VERSION = 1
_LEVEL = re.compile(r"^(?:enc|dec)(\d+)_")
_DEEPEST = re.compile(r"^(?:bottleneck|aspp)(?:_|$)")
_LOGITS = re.compile(r"^logits(?:_|$)")


# === The table ===


@dataclass(frozen=True)
class LatencyTable:
    """Int8 p50 per level and width, and of the whole model, per thread count.

    Attributes:
        widths: the model's filters per level (bottleneck last): the "full" widths.
        granularity: candidate widths are the multiples of it below each level's width.
        threads: thread counts measured.
        full_ms: ``{threads: p50 ms}`` of the whole model.
        level_ms: ``{threads: ({width: p50 ms}, ...)}``, one mapping per level.
        input_shape, num_classes, architecture: what was measured (``architecture``: ``decoder``
            and ``resolution``, see :func:`architecture_of`).
        model, runtime, machine, settings: provenance (model name, ``litert x.y``, host info,
            warm-up / runs / rounds).
    """

    widths: tuple[int, ...]
    granularity: int
    threads: tuple[int, ...]
    full_ms: Mapping[int, float]
    level_ms: Mapping[int, tuple[Mapping[int, float], ...]]
    input_shape: tuple[int, int, int]
    num_classes: int
    architecture: Mapping[str, Any] = field(default_factory=dict)
    model: str = ""
    runtime: str = ""
    machine: Mapping[str, Any] = field(default_factory=dict, repr=False)
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _check_ints(self.widths, "widths", 1)
        _check_ints(self.input_shape, "input_shape", 1, length=3)
        _check_ints((self.granularity,), "granularity", 1)
        _check_ints((self.num_classes,), "num_classes", 1)
        _check_ints(self.threads, "threads", 1)
        if not self.threads or len(set(self.threads)) != len(self.threads):
            raise ValueError(f"Expected distinct thread counts in the latency table. Received: threads={self.threads!r}.")
        for name in ("widths", "input_shape", "threads"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        full, levels = {}, {}
        for t in self.threads:
            if t not in self.full_ms or t not in self.level_ms:
                raise ValueError(f"Expected latencies for every thread count {list(self.threads)}. Received: none for "
                                 f"threads={t} (full_ms has {sorted(self.full_ms)}, level_ms {sorted(self.level_ms)}).")
            full[t] = _ms(self.full_ms[t], f"full_ms[{t}]")
            levels[t] = self._check_levels(self.level_ms[t], t)
        object.__setattr__(self, "full_ms", full)
        object.__setattr__(self, "level_ms", levels)

    def _check_levels(self, levels: Any, threads: int) -> tuple[dict[int, float], ...]:
        if not isinstance(levels, Sequence) or len(levels) != len(self.widths):
            raise ValueError(f"Expected {len(self.widths)} levels (one per width, bottleneck last) at threads={threads}. "
                             f"Received: {levels!r:.120}.")
        out = []
        for level, (times, width) in enumerate(zip(levels, self.widths)):
            times = {int(w): _ms(ms, f"level {level} width {w} threads {threads}") for w, ms in dict(times).items()}
            missing = [w for w in candidate_widths(width, self.granularity) if w not in times]
            if missing:
                raise ValueError(f"Expected level {level} (width {width}) timed at every candidate width "
                                 f"{candidate_widths(width, self.granularity)}. Received: none for {missing} at "
                                 f"threads={threads}.")
            out.append(times)
        return tuple(out)

    def ms(self, level: int, width: int, threads: int) -> float:
        """The p50 of ``level`` at ``width`` (a width the table holds)."""
        times = self.level_ms[self._threads(threads)][level]
        if width not in times:
            raise ValueError(f"Expected a width the table measured for level {level}: {sorted(times)}. Received: {width}.")
        return times[width]

    def predict(self, widths: Sequence[int], threads: int) -> float:
        """Predicted int8 p50 (ms) of the model thinned to ``widths``, one per level."""
        threads = self._threads(threads)
        if len(widths) != len(self.widths):
            raise ValueError(f"Expected {len(self.widths)} widths (one per level). Received: {list(widths)}.")
        delta = sum(self.ms(level, int(w), threads) - self.ms(level, full, threads)
                    for level, (w, full) in enumerate(zip(widths, self.widths)))
        return self.full_ms[threads] + delta

    def _threads(self, threads: int) -> int:
        if threads not in self.level_ms:
            raise ValueError(f"Expected a thread count the table measured: {list(self.threads)}. Received: {threads!r}.")
        return threads

    # === Serialisation ===

    def to_dict(self) -> dict[str, Any]:
        """Versioned JSON-ready form (thread counts and widths as string keys)."""
        return {
            "format": TABLE_FORMAT, "version": TABLE_VERSION, "model": self.model,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "architecture": dict(self.architecture), "runtime": self.runtime, "granularity": self.granularity,
            "threads": list(self.threads), "widths": list(self.widths),
            "full_model_ms": {str(t): ms for t, ms in self.full_ms.items()},
            "levels": [
                {"level": level, "layers": level_label(level, len(self.widths) - 1), "width": width,
                 "ms": {str(t): {str(w): ms for w, ms in sorted(self.level_ms[t][level].items())}
                        for t in self.threads}}
                for level, width in enumerate(self.widths)
            ],
            "settings": dict(self.settings), "machine": dict(self.machine),
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str = "latency table") -> LatencyTable:
        """Read :meth:`to_dict`'s form back, refusing other documents and versions with a clear error."""
        if not isinstance(raw, Mapping) or raw.get("format") != TABLE_FORMAT:
            found = raw.get("format") if isinstance(raw, Mapping) else type(raw).__name__
            raise ValueError(f"Expected a {where} with format {TABLE_FORMAT!r} (written by `roverlite latency-table`). "
                             f"Received: format {found!r}.")
        if raw.get("version") != TABLE_VERSION:
            raise ValueError(f"Expected {where} version {TABLE_VERSION}. Received: version {raw.get('version')!r}.")
        keys = ("input_shape", "num_classes", "granularity", "threads", "widths", "full_model_ms", "levels")
        missing = [k for k in keys if k not in raw]
        if missing:
            raise ValueError(f"Expected keys {list(keys)} in the {where}. Received: no {missing}.")
        try:
            threads = [int(t) for t in raw["threads"]]
            levels = {t: tuple(entry["ms"][str(t)] for entry in raw["levels"]) for t in threads}
            full = {int(t): ms for t, ms in raw["full_model_ms"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"Malformed {where}. Expected levels[i].ms[threads][width] and full_model_ms[threads] "
                             f"for every thread count. Received: {type(err).__name__}: {err}.") from None
        return cls(
            widths=tuple(raw["widths"]), granularity=raw["granularity"], threads=tuple(threads), full_ms=full,
            level_ms=levels, input_shape=tuple(raw["input_shape"]), num_classes=raw["num_classes"],
            architecture=dict(raw.get("architecture") or {}), model=str(raw.get("model") or ""),
            runtime=str(raw.get("runtime") or ""), machine=dict(raw.get("machine") or {}),
            settings=dict(raw.get("settings") or {}),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table as JSON (atomically); returns the path."""
        return atomic_write_json(path, self.to_dict())


def load_latency_table(path: str | os.PathLike) -> LatencyTable:
    """Read a table written by :meth:`LatencyTable.save` / ``roverlite latency-table``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, another document, another version, or bad values (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Latency table not found. Expected a JSON file from `roverlite latency-table`. "
                                f"Received: {str(path)!r}.")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"Cannot read latency table {str(path)!r}. Expected JSON. Received: {err}.") from None
    return LatencyTable.from_dict(raw, f"latency table {str(path)!r}")


def check_table_fits(table: LatencyTable, model: keras.Model, where: str = "latency table") -> None:
    """Refuse a table measured for another model: widths, input, classes and architecture must match.

    Raises:
        ValueError: naming every difference.
    """
    wanted = {"widths": tuple(level_widths(model)), "input_shape": tuple(int(s) for s in model.input_shape[1:]),
              "num_classes": int(model.output_shape[-1]), "architecture": architecture_of(model)}
    found = {"widths": table.widths, "input_shape": table.input_shape, "num_classes": table.num_classes,
             "architecture": dict(table.architecture)}
    differ = [f"{k} {found[k]!r} (model: {wanted[k]!r})" for k in wanted if found[k] != wanted[k]]
    if differ:
        raise ValueError(f"Expected a {where} measured for this model. Received: {'; '.join(differ)}. Measure one "
                         "with `roverlite latency-table` (with the step's --decoder / --resolution / --stem), or use "
                         "table: this.")


def candidate_widths(width: int, granularity: int) -> list[int]:
    """The multiples of ``granularity`` below ``width``, then ``width`` itself (ascending)."""
    return [*range(granularity, width, granularity), width]


def level_label(level: int, depth: int) -> str:
    return "bottleneck" if level == depth else f"enc{level}+dec{level}" + ("+logits" if level == 0 else "")


def _check_ints(values: Any, name: str, minimum: int, length: int | None = None) -> None:
    bad = not isinstance(values, Sequence) or (length is not None and len(values) != length) or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum for v in values)
    if bad:
        raise ValueError(f"Expected {name} as integers >= {minimum}" + (f" ({length} of them)" if length else "")
                         + f". Received: {name}={values!r}.")


def _ms(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"Expected a p50 latency in ms > 0 for {where}. Received: {value!r}.")
    return float(value)


# === Measuring ===


def architecture_of(model: keras.Model) -> dict[str, Any]:
    """``{"decoder": "transpose" | "nearest" | "shuffle", "resolution": 1.0 | 0.5}``, plus ``"stem":
    "shuffle"`` for a space-to-depth stem: what a table must match (tables measured before the shuffle
    moves carry no ``stem`` and still match pool-stem models)."""
    names = [layer.name for layer in model.layers]
    decoder = "nearest"
    if any(n.startswith("dec") and n.endswith("_tconv") for n in names):
        decoder = "transpose"
    elif any(n.startswith("dec") and n.endswith("_shuffle") for n in names):
        decoder = "shuffle"
    half = any(n.startswith("stem") for n in names)
    found = {"decoder": decoder, "resolution": 0.5 if half else 1.0}
    return {**found, "stem": "shuffle"} if "stem_shuffle" in names else found


def measure_latency_table(
    model: keras.Model,
    granularity: int = 8,
    threads: Sequence[int] = (1, 2),
    warmup: int = 10,
    runs: int = 100,
    rounds: int = 5,
    name: str | None = None,
) -> LatencyTable:
    """Time every level of ``model`` at every candidate width, and the whole model, on this machine.

    Args:
        model: a roverlite U-Net (as ``structured_prune`` takes); its weights do not matter.
        granularity: candidate widths are its multiples below each level's width.
        threads: LiteRT thread counts (each from 1 to the usable cores).
        warmup, runs, rounds: warm-up runs per model, then ``runs`` timed runs per model split into
            ``rounds`` interleaved rounds.
        name: the model name stored in the table (default: ``model.name``).

    Raises:
        ValueError: a model that is not a U-Net, bad settings, or a runtime that cannot run one.
    """
    _check_ints((granularity, warmup + 1, runs, rounds), "granularity, warmup + 1, runs and rounds", 1)
    threads = tuple(check_threads(t) for t in threads)
    widths = level_widths(model)
    shape = tuple(int(s) for s in model.input_shape[1:])
    started = time.perf_counter()
    jobs = [(level, w) for level, full in enumerate(widths) for w in candidate_widths(full, granularity)]
    contents = [_convert_int8(level_model(model, level, w, widths)) for level, w in jobs]
    calibration = np.random.default_rng(0).normal(size=(4, *shape)).astype(np.float32)
    contents.append(convert_tflite(model, "int8", calibration=calibration))
    logger.info("latency table: %d level models + the whole model converted in %.1f s", len(jobs),
                time.perf_counter() - started)
    full_ms, level_ms = {}, {}
    for t in threads:
        p50 = [round(ms, 5) for ms in time_tflite(contents, t, warmup=warmup, runs=runs, rounds=rounds)]
        full_ms[t] = p50[-1]
        levels: list[dict[int, float]] = [{} for _ in widths]
        for (level, w), ms in zip(jobs, p50):
            levels[level][w] = ms
        level_ms[t] = tuple(levels)
    return LatencyTable(
        widths=widths, granularity=granularity, threads=threads, full_ms=full_ms, level_ms=level_ms,
        input_shape=shape, num_classes=int(model.output_shape[-1]), architecture=architecture_of(model),
        model=name or model.name, runtime=_runtime_name(),
        machine=_machine(), settings={"warmup": warmup, "runs": runs, "rounds": rounds, "batch": 1,
                                      "precision": "int8", "seconds": round(time.perf_counter() - started, 1)},
    )


def level_model(model: keras.Model, level: int, width: int, widths: Sequence[int] | None = None) -> keras.Model:
    """The layers of one level of ``model`` thinned to ``width``, as a model of its own (batch 1).

    Its inputs are the tensors the level reads from other levels (at their full widths) and its
    outputs those other levels read from it (or the model's output). Weights are fresh: only the
    latency of this model means anything.
    """
    widths = tuple(widths or level_widths(model))
    ratios = [1.0] * len(widths)
    ratios[level] = width / widths[level]
    config = thinned_config(model, ratios)
    depth = len(widths) - 1
    mine = [spec for spec in config["layers"] if _level_of(spec["name"], depth) == level]
    names = {spec["name"] for spec in mine}
    inputs: dict[str, str] = {}
    layers: list[dict[str, Any]] = []
    for spec in mine:
        for node in spec["inbound_nodes"]:
            for inbound in node:
                source = inbound[0]
                if source not in names and source not in inputs:
                    inputs[source] = f"x{len(inputs)}"
                    shape = model.get_layer(source).output.shape[1:]
                    layers.append({"class_name": "InputLayer", "name": inputs[source], "inbound_nodes": [],
                                   "config": {"batch_input_shape": [1, *(int(s) for s in shape)], "dtype": "float32",
                                              "sparse": False, "ragged": False, "name": inputs[source]}})
                inbound[0] = inputs.get(source, source)
        layers.append(spec)
    outputs = [spec["name"] for spec in mine if _read_outside(spec["name"], names, config)]
    sub = {"name": f"level{level}_w{width}", "layers": layers,
           "input_layers": [[n, 0, 0] for n in inputs.values()], "output_layers": [[n, 0, 0] for n in outputs]}
    return keras.Model.from_config(sub)


def _level_of(name: str, depth: int) -> int | None:
    if _DEEPEST.match(name):
        return depth
    if _LOGITS.match(name):
        return 0
    match = _LEVEL.match(name)
    return int(match.group(1)) if match and int(match.group(1)) < depth else None


def _read_outside(name: str, names: set[str], config: Mapping[str, Any]) -> bool:
    if any(out[0] == name for out in config["output_layers"]):
        return True
    return any(spec["name"] not in names and any(i[0] == name for node in spec["inbound_nodes"] for i in node)
               for spec in config["layers"])


def _convert_int8(model: keras.Model) -> bytes:
    """Full-int8 TFLite (int8 I/O, builtins only) of a model with any number of inputs, at batch 1."""
    shapes = [tuple(int(s) for s in t.shape) for t in model.inputs]
    specs = [tf.TensorSpec(shape, tf.float32, name=f"x{i}") for i, shape in enumerate(shapes)]
    function = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False),
                           input_signature=specs)
    holder = tf.Module()  # variables only: far quicker to save than the Keras model (see export.tflite)
    holder.model_variables = list(model.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    # By name: the converted model may order its inputs differently from the signature.
    converter.representative_dataset = lambda: (
        {f"x{i}": rng.normal(size=shape).astype(np.float32) for i, shape in enumerate(shapes)} for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    content = converter.convert()
    check_builtin_ops(content)
    return content


def time_tflite(
    contents: Sequence[bytes], threads: int, warmup: int = 10, runs: int = 100, rounds: int = 5
) -> list[float]:
    """p50 ms of each TFLite model (any number of inputs), loaded together and timed in interleaved rounds."""
    interpreter_class, _ = tflite_interpreter_class()
    rng = np.random.default_rng(0)
    interpreters = []
    for content in contents:
        interpreter = interpreter_class(model_content=content, num_threads=threads)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            info = np.iinfo(detail["dtype"]) if np.issubdtype(detail["dtype"], np.integer) else None
            value = (rng.integers(info.min, info.max + 1, detail["shape"]) if info else rng.normal(size=detail["shape"]))
            interpreter.set_tensor(detail["index"], value.astype(detail["dtype"]))
        for _ in range(warmup):
            interpreter.invoke()
        interpreters.append(interpreter)

    times: list[list[float]] = [[] for _ in contents]
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for interpreter, out in zip(interpreters, times):
            for _ in range(per_round):
                start = time.perf_counter()
                interpreter.invoke()
                out.append((time.perf_counter() - start) * 1e3)
    return [percentile(t, 50) for t in times]


def _runtime_name() -> str:
    for module_name in TFLITE_BACKENDS:
        version = runtime_version(module_name)
        if version:
            return f"{module_name.split('.')[0]} {version}"
    return "unknown"


def _machine() -> dict[str, Any]:
    return host_info()


# === Front door (the CLI's) ===


def write_latency_table(
    source: str | os.PathLike,
    out: str | os.PathLike,
    granularity: int = 8,
    threads: Sequence[int] = (1, 2),
    input_shape: Sequence[int] = (128, 128, 1),
    num_classes: int = 4,
    decoder: str | None = None,
    resolution: float = 1.0,
    runs: int = 100,
    stem: str = "pool",
) -> LatencyTable:
    """Measure the table of a run folder, a ``model.h5`` or an (untrained) registered model; save it to ``out``.

    ``decoder`` (``nearest`` / ``shuffle``), ``resolution: 0.5`` and ``stem`` measure the model as a
    ``structured`` step with those options will ship it. ``input_shape`` and ``num_classes`` apply
    to registered names only.
    """
    model = _load_source(source, input_shape, num_classes)
    if decoder is not None:
        model = swap_decoder(model, decoder)
    if resolution == 0.5:
        model = half_resolution(model, stem)
    elif resolution != 1.0:
        raise ValueError(f"Expected resolution 1.0 or 0.5. Received: {resolution!r}.")
    table = measure_latency_table(model, granularity, threads, runs=runs, name=Path(str(source)).name)
    table.save(out)
    return table


def _load_source(source: str | os.PathLike, input_shape: Sequence[int], num_classes: int) -> keras.Model:
    path = Path(source)
    if path.is_dir():
        path = path / "model.h5"
    if path.is_file():
        return load_model_file(path)
    if str(source) in list_models():
        return create_model(str(source), input_shape=tuple(input_shape), num_classes=num_classes)
    raise FileNotFoundError(f"Expected a run folder with model.h5, a model.h5 file or a registered model name "
                            f"({', '.join(list_models())}). Received: {str(source)!r}.")
