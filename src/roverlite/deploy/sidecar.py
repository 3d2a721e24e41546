"""The JSON sidecar beside every artifact: parse it strictly, and refuse artifacts it does not match.

An artifact ``unet_xs_tflite_int8.tflite`` has its sidecar at ``unet_xs_tflite_int8.json``. Export
names every artifact ``<model>_<format>.<ext>``, so the artifacts of one model never share a stem
and their sidecars never collide.

The sidecar says everything a device needs to run the artifact without the training config:
classes and colours, the ignore label and the classes scored in mIoU, the input shape, dtype,
layout and normalisation, the quantization of input and output, and the artifact's size and
sha256. It also records provenance (source model and its sha256, recipe, package versions, MACs)
and the export's self-check.

:func:`parse_sidecar` accepts any JSON value and either returns a validated :class:`Sidecar` or
raises ``ValueError`` naming the field; it never fails any other way (it is fuzzed). Unknown keys
are ignored so that a newer minor writer stays readable; ``schema_version`` guards real changes.

The input rules (size, colour mode, normalisation, gray tolerance, resize method) are a
:class:`~roverlite.core.preprocessing.Preprocessing`: ``Sidecar.preprocessing`` builds it and
``to_dict`` writes its ``to_dict()`` into the ``input`` and ``normalization`` blocks.

TensorFlow-free: this module runs on the robot (NumPy comes with the core's preprocessing).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roverlite.core.preprocessing import (
    COLOR_MODES,
    GRAY_TOLERANCE,
    NORMALIZATION_KEYS,
    PIXEL_SCALE,
    RESIZE_METHODS,
    Preprocessing,
)

__all__ = [
    "SCHEMA_VERSION",
    "TASK",
    "Quantization",
    "Sidecar",
    "TensorSpec",
    "load_verified",
    "matching_pending_sidecar",
    "parse_sidecar",
    "pending_sidecar_path",
    "read_sidecar",
    "sha256_bytes",
    "sidecar_path",
    "verify_artifact",
]

SCHEMA_VERSION = 1
TASK = "semantic_segmentation"
LAYOUT = "NHWC"
RUNTIMES = ("litert", "onnxruntime")
# Which runtime reads which file; a sidecar claiming another is a mix-up, not a model.
SUFFIX_RUNTIME = {".tflite": "litert", ".onnx": "onnxruntime"}
# (min, max) of the stored integer for each quantized dtype.
QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
DTYPES = ("float32", "float16", *QUANT_RANGES)
# Largest sidecar read: a self-check with confusion matrices is a few KiB; this only stops a
# corrupted or hostile file from being read into memory whole.
MAX_SIDECAR_BYTES = 16 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHORT_REPR = reprlib.Repr()  # keyword arguments need Python 3.12
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 3, 6, 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80


# === Data ===


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of a tensor: ``real = scale * (stored - zero_point)``."""

    scale: float
    zero_point: int

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class TensorSpec:
    """Shape (NHWC, batch 1), dtype and quantization (``None`` for float tensors) of an I/O tensor."""

    shape: tuple[int, ...]
    dtype: str
    quantization: Quantization | None = None
    layout: str = LAYOUT

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "quantization": None if self.quantization is None else self.quantization.to_dict(),
        }


@dataclass(frozen=True)
class Sidecar:
    """A validated sidecar. Build one with :func:`parse_sidecar`; write it with ``to_dict()``.

    Attributes:
        name: model name (the artifact's stem without the format suffix).
        format: export format name, e.g. ``tflite_int8``.
        runtime: ``litert`` or ``onnxruntime``.
        artifact_file: the artifact's file name when it was exported.
        size_bytes, sha256: of the artifact file.
        classes, class_colors: class names (index = class id) and one RGB colour each.
        ignore_index: truth label excluded from metrics, or ``None``.
        eval_class_ids: classes averaged into mIoU.
        hazards: hazard class -> the traversable classes it must not be predicted as (the config's
            ``data.hazards``), so evaluation on the robot reports hazard rates; ``None`` when none
            were declared (and in sidecars written before the field existed).
        ood: the out-of-distribution monitor calibrated at export on the check images
            (:meth:`roverlite.deploy.ood.OodMonitor.to_dict`); ``None`` in sidecars written before
            the field existed or when too few check images ran (the device then runs without one).
        input, output: I/O tensors as the runtime sees them.
        color_mode: ``grayscale`` or ``rgb`` (the input's channels).
        gray_tolerance: a 3-channel image is accepted by a grayscale model when its channels differ
            by at most this many levels at every pixel (the training loader's rule); ``-1`` refuses.
        allow_gray_to_rgb: whether an RGB model accepts a 1-channel image (replicated to 3).
        mean, std, pixel_scale: ``x = (pixel * pixel_scale - mean) / std`` per channel.
        resize: how images are resized to the input size (``input.resize``; sidecars written
            before the field existed read as ``bilinear``, what their exporter used).
        preprocessing: all of the above with the input size, as one
            :class:`~roverlite.core.preprocessing.Preprocessing` (a property).
        source_path, source_sha256: the Keras model the artifact came from, when known.
        recipe, versions, cost, self_check: free-form provenance and the export's own check.
    """

    name: str
    format: str
    runtime: str
    artifact_file: str
    size_bytes: int
    sha256: str
    classes: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    ignore_index: int | None
    eval_class_ids: tuple[int, ...]
    input: TensorSpec
    output: TensorSpec
    color_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pixel_scale: float = PIXEL_SCALE
    gray_tolerance: int = GRAY_TOLERANCE
    allow_gray_to_rgb: bool = False
    resize: str = RESIZE_METHODS[0]
    source_path: str | None = None
    source_sha256: str | None = None
    recipe: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    cost: Mapping[str, Any] | None = None
    self_check: Mapping[str, Any] | None = None
    hazards: Mapping[str, tuple[str, ...]] | None = None
    ood: Mapping[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    task: str = TASK

    def __post_init__(self) -> None:
        # Round-trip through the parser so a hand-built Sidecar obeys exactly the reader's rules.
        parse_sidecar(self.to_dict(), where="Sidecar(...)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.input.shape[1]), int(self.input.shape[2])

    @property
    def channels(self) -> int:
        return int(self.input.shape[3])

    @property
    def preprocessing(self) -> Preprocessing:
        """The input rules the device applies to every frame, as training applied them."""
        return Preprocessing(
            image_size=self.image_size, color_mode=self.color_mode, mean=self.mean, std=self.std,
            pixel_scale=self.pixel_scale, gray_tolerance=self.gray_tolerance,
            allow_gray_to_rgb=self.allow_gray_to_rgb, resize=self.resize,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, the exact layout :func:`parse_sidecar` reads."""
        rules = self.preprocessing.to_dict()
        del rules["image_size"]  # the input shape carries it
        normalization = {key: rules.pop(key) for key in NORMALIZATION_KEYS}
        return {
            "schema_version": self.schema_version,
            "task": self.task,
            "name": self.name,
            "format": self.format,
            "runtime": self.runtime,
            "artifact": {"file": self.artifact_file, "size_bytes": self.size_bytes, "sha256": self.sha256},
            "classes": list(self.classes),
            "class_colors": [list(c) for c in self.class_colors],
            "ignore_index": self.ignore_index,
            "eval_class_ids": list(self.eval_class_ids),
            "input": {**self.input.to_dict(), **rules},
            "output": self.output.to_dict(),
            "normalization": normalization,
            "source": {"path": self.source_path, "sha256": self.source_sha256},
            "recipe": dict(self.recipe),
            "versions": dict(self.versions),
            "cost": None if self.cost is None else dict(self.cost),
            "self_check": None if self.self_check is None else dict(self.self_check),
            # Written only when declared: an optional field, so older readers and sidecars agree.
            **({} if self.hazards is None else {"hazards": {k: list(v) for k, v in self.hazards.items()}}),
            **({} if self.ood is None else {"ood": dict(self.ood)}),
        }


# === Paths and hashes ===


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """Where the sidecar of ``artifact`` lives: the same stem with ``.json`` (``m_tflite_int8.json``)."""
    return Path(artifact).with_suffix(".json")


def pending_sidecar_path(artifact: str | os.PathLike) -> Path:
    """Where an export leaves the new sidecar while it renames a new pair into place (``.<sidecar>.pending``).

    Export renames the new sidecar here, then the new artifact over the old one, then this file
    over the old sidecar (``roverlite.io.commit_pair``). A process killed between the last two
    renames leaves the new artifact with its sidecar here; :func:`load_verified` reads it.
    """
    path = sidecar_path(artifact)
    return path.with_name(f".{path.name}.pending")


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


# === Reading and verifying ===


def read_sidecar(artifact: str | os.PathLike) -> Sidecar:
    """Read and validate the sidecar of ``artifact`` (the artifact file itself is not read).

    Raises:
        FileNotFoundError: no sidecar at the expected path.
        ValueError: the sidecar is not valid JSON or not a valid sidecar.
    """
    path = sidecar_path(artifact)
    if not path.is_file():
        raise FileNotFoundError(
            f"Sidecar not found for {str(artifact)!r}. Expected the export's JSON sidecar at "
            f"{str(path)!r}. Received: no such file."
        )
    return _read_sidecar_file(path)


def _read_sidecar_file(path: Path) -> Sidecar:
    with open(path, "rb") as fh:
        raw = fh.read(MAX_SIDECAR_BYTES + 1)
    if len(raw) > MAX_SIDECAR_BYTES:
        raise ValueError(f"Sidecar {str(path)!r} is too large. Expected at most {MAX_SIDECAR_BYTES} bytes.")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(
            f"Sidecar {str(path)!r} is not valid JSON. Expected a UTF-8 JSON object. "
            f"Received: {type(err).__name__}: {str(err)[:200]}."
        ) from None
    return parse_sidecar(value, where=str(path))


def load_verified(artifact: str | os.PathLike) -> tuple[Sidecar, bytes]:
    """Read ``artifact`` and its sidecar; refuse the artifact unless its sha256 matches.

    The returned bytes are the ones that were hashed, so a caller that hands them to the runtime
    runs exactly what was verified (no window for the file to change in between).

    Raises:
        FileNotFoundError: artifact or sidecar missing.
        ValueError: invalid sidecar, wrong file type for its runtime, or a hash mismatch (the message
            shows both hashes).
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise FileNotFoundError(f"Artifact not found. Expected a .tflite or .onnx file. Received: {str(artifact)!r}.")
    pending = matching_pending_sidecar(artifact)
    sidecar = pending if pending is not None else read_sidecar(artifact)
    expected_runtime = SUFFIX_RUNTIME.get(artifact.suffix.lower())
    if expected_runtime != sidecar.runtime:
        raise ValueError(
            f"Artifact {str(artifact)!r} does not fit its sidecar. Expected a file ending in "
            f"{[s for s, r in SUFFIX_RUNTIME.items() if r == sidecar.runtime]} for runtime "
            f"{sidecar.runtime!r}. Received: suffix {artifact.suffix!r}."
        )
    content = artifact.read_bytes()
    actual = sha256_bytes(content)
    if actual != sidecar.sha256:
        raise ValueError(
            f"Refusing artifact {str(artifact)!r}: its sha256 does not match its sidecar "
            f"{str(sidecar_path(artifact))!r} (modified, truncated or swapped). "
            f"Expected: {sidecar.sha256}. Received: {actual}."
        )
    return sidecar, content


def matching_pending_sidecar(artifact: Path) -> Sidecar | None:
    """The sidecar an interrupted export left pending, when it describes the artifact now in place.

    Only the microseconds between an export's last two renames leave one that matches (see
    :func:`pending_sidecar_path`); a pending file from an export killed earlier describes an
    artifact that never replaced this one, and is ignored.
    """
    pending = pending_sidecar_path(artifact)
    if not pending.is_file():
        return None
    try:
        candidate = _read_sidecar_file(pending)
    except (OSError, ValueError):
        return None
    try:
        with open(artifact, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    return candidate if digest == candidate.sha256 else None


def verify_artifact(artifact: str | os.PathLike) -> Sidecar:
    """The artifact's validated sidecar, after checking the artifact's sha256 against it."""
    return load_verified(artifact)[0]


# === Parsing ===


def parse_sidecar(value: Any, where: str = "sidecar") -> Sidecar:
    """Validate a decoded JSON value and return a :class:`Sidecar`.

    Args:
        value: anything ``json.loads`` can return.
        where: names the source in error messages (usually the file path).

    Raises:
        ValueError: naming the first missing or invalid field. Nothing else, for any input.
    """
    p = _Parser(where)
    root = p.mapping(value, "")
    version = p.integer(root, "schema_version", low=1)
    if version != SCHEMA_VERSION:
        p.fail("schema_version", f"{SCHEMA_VERSION} (this reader's version)", version)
    task = p.string(root, "task")
    if task != TASK:
        p.fail("task", repr(TASK), task)
    runtime = p.choice(root, "runtime", RUNTIMES)
    artifact = p.mapping(p.get(root, "artifact"), "artifact")
    classes = p.classes(root)
    k = len(classes)
    colors = p.colors(root, k)
    ignore_index = p.optional_integer(root, "ignore_index", low=k, high=255)
    eval_ids = p.eval_ids(root, k)
    inp, color_mode, gray_tolerance, allow_gray_to_rgb, resize = p.input_spec(root)
    out = p.tensor(p.mapping(p.get(root, "output"), "output"), "output")
    if out.shape != (*inp.shape[:3], k):
        p.fail("output.shape", f"[1, {inp.shape[1]}, {inp.shape[2]}, {k}] (input size, one logit per class)", list(out.shape))
    norm = p.mapping(p.get(root, "normalization"), "normalization")
    mean = p.floats(norm, "mean", inp.shape[3], prefix="normalization.")
    std = p.floats(norm, "std", inp.shape[3], positive=True, prefix="normalization.")
    source = p.mapping(p.get(root, "source"), "source")
    return _build(
        name=p.string(root, "name"),
        format=p.string(root, "format"),
        runtime=runtime,
        artifact_file=p.string(artifact, "file", prefix="artifact."),
        size_bytes=p.integer(artifact, "size_bytes", low=0, prefix="artifact."),
        sha256=p.sha256(artifact, "sha256", prefix="artifact."),
        classes=classes,
        class_colors=colors,
        ignore_index=ignore_index,
        eval_class_ids=eval_ids,
        input=inp,
        output=out,
        color_mode=color_mode,
        mean=mean,
        std=std,
        pixel_scale=p.number(norm, "pixel_scale", positive=True, prefix="normalization."),
        gray_tolerance=gray_tolerance,
        allow_gray_to_rgb=allow_gray_to_rgb,
        resize=resize,
        source_path=p.optional_string(source, "path", prefix="source."),
        source_sha256=p.optional_sha256(source, "sha256", prefix="source."),
        recipe=p.mapping(p.get(root, "recipe"), "recipe"),
        versions=p.versions(root),
        cost=p.optional_mapping(root, "cost"),
        self_check=p.optional_mapping(root, "self_check"),
        hazards=p.hazards(root, classes),
        ood=p.ood(root, k, inp.shape[3]),
    )


def _build(**fields: Any) -> Sidecar:
    # object.__new__ + field assignment skips __post_init__ (which would parse again, forever).
    sidecar = object.__new__(Sidecar)
    for key, value in {**fields, "schema_version": SCHEMA_VERSION, "task": TASK}.items():
        object.__setattr__(sidecar, key, value)
    return sidecar


class _Parser:
    """Typed field readers that turn every problem into one ValueError naming the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, key: str, expected: str, received: Any) -> None:
        # reprlib caps depth and length: a huge or deeply nested value must not cost time or recursion.
        shown = _SHORT_REPR.repr(received)
        raise ValueError(
            f"Invalid sidecar {self.where!r}: field {key or '(root)'!r}. Expected {expected}. Received: {shown}."
        )

    def get(self, obj: Mapping[str, Any], key: str, prefix: str = "") -> Any:
        if key not in obj:
            raise ValueError(f"Invalid sidecar {self.where!r}: missing field {prefix + key!r}.")
        return obj[key]

    def mapping(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, "a JSON object", value)
        return value

    def optional_mapping(self, obj: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        value = obj.get(key)
        return None if value is None else self.mapping(value, key)

    def string(self, obj: Mapping[str, Any], key: str, prefix: str = "") -> str:
        value = self.get(obj, key, prefix)
        if not isinstance(value, str) or not value:
            self.fail(prefix + key, "a non-empty string", value)
        return value

    def optional_string(self, obj: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
        return None if obj.get(key) is None else self.string(obj, key, prefix)

    def choice(self, obj: Mapping[str, Any], key: str, options: tuple[str, ...], prefix: str = "") -> str:
        value = self.get(obj, key, prefix)
        if not isinstance(value, str) or value not in options:
            self.fail(prefix + key, f"one of {list(options)}", value)
        return value

    def integer(self, obj: Mapping[str, Any], key: str, low: int | None = None, high: int | None = None,
                prefix: str = "") -> int:
        value = self.get(obj, key, prefix)
        return self.integer_value(value, prefix + key, low, high)

    def integer_value(self, value: Any, key: str, low: int | None = None, high: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            bounds = f" in {low}..{high}" if high is not None else (f" >= {low}" if low is not None else "")
            self.fail(key, f"an integer{bounds}", value)
        return value

    def optional_integer(self, obj: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
        value = self.get(obj, key)
        return None if value is None else self.integer_value(value, key, low, high)

    def number(self, obj: Mapping[str, Any], key: str, positive: bool = False, prefix: str = "") -> float:
        return self.number_value(self.get(obj, key, prefix), prefix + key, positive)

    def number_value(self, value: Any, key: str, positive: bool = False) -> float:
        number = math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # a JSON integer too large for a float
                number = math.nan
        if not math.isfinite(number) or (positive and number <= 0):
            self.fail(key, "a finite number" + (" > 0" if positive else ""), value)
        return number

    def list_of(self, value: Any, key: str, low: int, high: int) -> list[Any]:
        if not isinstance(value, list) or not low <= len(value) <= high:
            self.fail(key, f"a list of {low}..{high} items", value)
        return value

    def floats(self, obj: Mapping[str, Any], key: str, channels: int, positive: bool = False,
               prefix: str = "") -> tuple[float, ...]:
        name = prefix + key
        items = self.list_of(self.get(obj, key, prefix), name, 1, channels)
        if len(items) not in (1, channels):
            self.fail(name, f"1 or {channels} values (one per channel)", items)
        return tuple(self.number_value(v, name, positive) for v in items)

    def sha256(self, obj: Mapping[str, Any], key: str, prefix: str = "") -> str:
        value = self.get(obj, key, prefix)
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            self.fail(prefix + key, "64 lowercase hex digits (sha256)", value)
        return value

    def optional_sha256(self, obj: Mapping[str, Any], key: str, prefix: str = "") -> str | None:
        return None if obj.get(key) is None else self.sha256(obj, key, prefix)

    def classes(self, root: Mapping[str, Any]) -> tuple[str, ...]:
        items = self.list_of(self.get(root, "classes"), "classes", 2, 255)
        if not all(isinstance(n, str) and n for n in items) or len(set(items)) != len(items):
            self.fail("classes", "unique non-empty class names", items)
        return tuple(items)

    def colors(self, root: Mapping[str, Any], k: int) -> tuple[tuple[int, int, int], ...]:
        items = self.list_of(self.get(root, "class_colors"), "class_colors", k, k)
        out = []
        for color in items:
            rgb = self.list_of(color, "class_colors", 3, 3)
            out.append(tuple(self.integer_value(v, "class_colors", 0, 255) for v in rgb))
        return tuple(out)

    def eval_ids(self, root: Mapping[str, Any], k: int) -> tuple[int, ...]:
        items = self.list_of(self.get(root, "eval_class_ids"), "eval_class_ids", 1, k)
        ids = tuple(self.integer_value(v, "eval_class_ids", 0, k - 1) for v in items)
        if len(set(ids)) != len(ids):
            self.fail("eval_class_ids", "unique class ids", items)
        return ids

    def tensor(self, obj: Mapping[str, Any], key: str) -> TensorSpec:
        shape_raw = self.list_of(self.get(obj, "shape", key + "."), key + ".shape", 4, 4)
        shape = tuple(self.integer_value(v, key + ".shape", 1, 1 << 20) for v in shape_raw)
        if shape[0] != 1:
            self.fail(key + ".shape", "batch size 1 (exported models have a fixed batch of 1)", shape_raw)
        layout = self.get(obj, "layout", key + ".")
        if layout != LAYOUT:
            self.fail(key + ".layout", repr(LAYOUT), layout)
        dtype = self.get(obj, "dtype", key + ".")
        if not isinstance(dtype, str) or dtype not in DTYPES:
            self.fail(key + ".dtype", f"one of {list(DTYPES)}", dtype)
        quant = obj.get("quantization")
        if (quant is None) != (dtype not in QUANT_RANGES):
            self.fail(key + ".quantization", f"quantization parameters exactly when dtype is {list(QUANT_RANGES)}", quant)
        if quant is None:
            return TensorSpec(shape=shape, dtype=dtype)
        quant = self.mapping(quant, key + ".quantization")
        low, high = QUANT_RANGES[dtype]
        params = Quantization(
            scale=self.number(quant, "scale", positive=True, prefix=key + ".quantization."),
            zero_point=self.integer(quant, "zero_point", low, high, prefix=key + ".quantization."),
        )
        return TensorSpec(shape=shape, dtype=dtype, quantization=params)

    def input_spec(self, root: Mapping[str, Any]) -> tuple[TensorSpec, str, int, bool, str]:
        obj = self.mapping(self.get(root, "input"), "input")
        spec = self.tensor(obj, "input")
        color_mode = self.choice(obj, "color_mode", tuple(COLOR_MODES), prefix="input.")
        if COLOR_MODES[color_mode] != spec.shape[3]:
            self.fail("input.shape", f"{COLOR_MODES[color_mode]} channel(s) for color_mode={color_mode!r}", list(spec.shape))
        tolerance = self.integer(obj, "gray_tolerance", -1, 255, prefix="input.")
        allow = self.get(obj, "allow_gray_to_rgb", "input.")
        if not isinstance(allow, bool):
            self.fail("input.allow_gray_to_rgb", "true or false", allow)
        # Optional: sidecars written before the field existed were resized bilinearly.
        resize = self.choice(obj, "resize", RESIZE_METHODS, prefix="input.") if "resize" in obj else RESIZE_METHODS[0]
        return spec, color_mode, tolerance, allow, resize

    def hazards(self, root: Mapping[str, Any], classes: tuple[str, ...]) -> dict[str, tuple[str, ...]] | None:
        value = root.get("hazards")
        if value is None:
            return None
        out = {}
        for hazard, traversable in self.mapping(value, "hazards").items():
            items = self.list_of(traversable, f"hazards.{hazard}", 1, len(classes))
            if (
                hazard not in classes or not all(isinstance(n, str) and n in classes for n in items)
                or hazard in items or len(set(items)) != len(items)
            ):
                self.fail(f"hazards.{hazard}", f"a class of {list(classes)} -> other classes of it, each once", items)
            out[hazard] = tuple(items)
        return out

    def ood(self, root: Mapping[str, Any], classes: int, channels: int) -> dict[str, Any] | None:
        value = root.get("ood")
        if value is None:
            return None
        from roverlite.deploy.ood import OodMonitor  # NumPy, imported only for a sidecar that has a monitor

        try:
            monitor = OodMonitor.from_dict(value)
        except ValueError as err:
            raise ValueError(f"Invalid sidecar {self.where!r}: field 'ood'. {err}") from None
        if len(monitor.class_reference) != classes or len(monitor.level_scale) not in (1, channels):
            self.fail("ood", f"a monitor of {classes} classes and {channels} channel(s)", value)
        return monitor.to_dict()

    def versions(self, root: Mapping[str, Any]) -> dict[str, str]:
        versions = self.mapping(self.get(root, "versions"), "versions")
        if not all(isinstance(v, str) for v in versions.values()):
            self.fail("versions", "package name -> version string", versions)
        return versions
