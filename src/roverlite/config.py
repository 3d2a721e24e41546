"""Run configuration: frozen, self-validating dataclasses that round-trip to YAML.

A config file has one section per pipeline stage (``data``, ``augment``, ``model``, ``train``).
Unknown keys are refused with the closest valid key suggested, every value is checked in
``__post_init__``, and ``Config.to_yaml()`` writes back exactly what ``Config.from_yaml()`` reads,
so the resolved config saved beside a run reproduces it.

Example:
    >>> cfg = load_config("configs/mars.yaml", overrides=["train.epochs=3"])
    >>> cfg.data.classes
    ('soil', 'bedrock', 'sand', 'big_rock')
"""

from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from roverlite._yaml import MAX_NUMBER_CHARS, config_dumper, parse_yaml
from roverlite.core.errors import ConfigError, did_you_mean  # re-exported: the config's error type
from roverlite.core.preprocessing import Preprocessing
from roverlite.io import atomic_write_text

DATA_FORMATS = ("folder", "npz", "synthetic")
COLOR_MODES = ("grayscale", "rgb")

# Distinct, colour-blind-friendly defaults (Okabe-Ito first) for configs that give no colours.
DEFAULT_COLORS = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
    (213, 94, 0), (204, 121, 167), (120, 120, 120), (255, 255, 255), (0, 0, 0),
)


# Ways to weight classes in the hard loss (train.class_weighting, a recipe step's class_weighting);
# roverlite.train.losses.class_weights_from_counts computes them.
CLASS_WEIGHTINGS = ("none", "inverse", "inverse_sqrt", "median")
# Terms of the hard loss (train.loss, a recipe step's loss); roverlite.train.losses.build_loss builds them.
LOSS_TERMS = ("cross_entropy", "dice", "focal")


# A config file is read whole only up to this size; its YAML is parsed by roverlite._yaml.parse_yaml
# (no aliases, no duplicate keys, numbers of at most MAX_NUMBER_CHARS characters, YAML 1.2 scalars).
MAX_CONFIG_BYTES = 1 << 20


def check_loss_terms(terms: Mapping[str, float], where: str) -> None:
    """Refuse a loss mapping (``train.loss``, a recipe step's ``loss``) that is empty, names an
    unknown term or has a weight that is not a finite number > 0.

    Raises:
        ConfigError: naming ``where``, the term and the closest valid name.
    """
    _require(bool(terms), f"{where} needs at least one term, e.g. {{cross_entropy: 1.0}}.")
    for name, weight in terms.items():
        _require(
            name in LOSS_TERMS,
            f"{where} term must be one of {LOSS_TERMS}. Received: {name!r}." + did_you_mean(name, LOSS_TERMS),
        )
        _require(
            math.isfinite(float(weight)) and float(weight) > 0,
            f"{where}.{name} weight must be a finite number > 0. Received: {weight}.",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


# === Sections ===


@dataclass(frozen=True)
class DataConfig:
    """Where the data is, what its labels mean, and how images are normalised.

    Attributes:
        format: ``folder`` (images/ + masks/ [+ splits.json]), ``npz`` (AN2DL layout) or
            ``synthetic`` (the built-in procedural terrain generator).
        path: folder or ``.npz`` file; ignored for ``synthetic``.
        classes: class names, index = class id after ``label_map``.
        colors: one RGB colour per class, used for overlays and plots.
        ignore_index: label excluded from loss and metrics (``None`` = every pixel counts).
        ignore_name: how reports name the ignore label (e.g. ``unlabelled``).
        eval_classes: classes averaged into mIoU (default: all of ``classes``).
        label_map: raw id -> id remapping applied to masks on load (e.g. AI4Mars -> AN2DL).
        hazards: hazard class -> the traversable classes it must never be predicted as, e.g.
            ``{big_rock: [soil, sand]}``; every eval, export self-check, gate and report then
            shows its miss rate and false-hazard rate (``roverlite.core.metrics.hazard_rates``).
        palette: for RGB colour masks, one ``[r, g, b, id]`` entry per colour.
        image_size: model input ``[height, width]``; images are resized bilinearly, masks nearest.
        color_mode: ``grayscale`` (1 channel) or ``rgb`` (3 channels).
        mean, std: per-channel normalisation applied to images scaled to [0, 1].
        val_fraction, split_seed: used only when the data has no ``splits.json``.
        folds, fold: k-fold cross-validation for data without ``splits.json``: the images are dealt
            into ``folds`` folds stratified by dominant class (seeded by ``split_seed``) and fold
            ``fold`` is val, the rest train; ``val_fraction`` is then unused. ``None`` = one split.
            ``roverlite.train.crossval.train_folds`` trains every fold and pools their confusion.
        quarantine: an audit's quarantine list (JSON); listed files are skipped when loading.
        max_images: cap on images per split (``None`` = all); for quick runs.
        synthetic_count: number of scenes when ``format`` is ``synthetic``.
    """

    format: str = "synthetic"
    path: str | None = None
    classes: tuple[str, ...] = ("soil", "bedrock", "sand", "big_rock")
    colors: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int | None = 255
    ignore_name: str = "unlabelled"
    eval_classes: tuple[str, ...] | None = None
    label_map: Mapping[int, int] | None = None
    hazards: Mapping[str, tuple[str, ...]] | None = None
    palette: tuple[tuple[int, int, int, int], ...] | None = None
    image_size: tuple[int, int] = (128, 128)
    color_mode: str = "grayscale"
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    val_fraction: float = 0.3
    split_seed: int = 0
    folds: int | None = None
    fold: int = 0
    quarantine: str | None = None
    max_images: int | None = None
    synthetic_count: int = 160

    def __post_init__(self) -> None:
        _require(
            self.format in DATA_FORMATS,
            f"data.format must be one of {DATA_FORMATS}. Received: data.format={self.format!r}."
            + did_you_mean(self.format, DATA_FORMATS),
        )
        _require(
            self.format == "synthetic" or bool(self.path),
            f"data.path is required for data.format={self.format!r}. Expected a folder or .npz "
            "path. Received: data.path=None.",
        )
        _require(len(self.classes) >= 2, f"Expected at least 2 classes. Received: data.classes={list(self.classes)}.")
        _require(
            len(set(self.classes)) == len(self.classes),
            f"Expected unique class names. Received: data.classes={list(self.classes)}.",
        )
        _require(len(self.classes) <= 255, "Expected at most 255 classes (masks are 8-bit).")
        if self.colors is not None:
            _require(
                len(self.colors) == len(self.classes),
                f"Expected one colour per class ({len(self.classes)}). Received: {len(self.colors)} colours.",
            )
            for c in self.colors:
                _require(
                    len(c) == 3 and all(0 <= v <= 255 for v in c),
                    f"Expected colours as [r, g, b] in 0..255. Received: {list(c)}.",
                )
        if self.ignore_index is not None:
            _require(
                len(self.classes) <= self.ignore_index <= 255,
                f"data.ignore_index must be an id in {len(self.classes)}..255, above the class ids "
                f"0..{len(self.classes) - 1}. Received: data.ignore_index={self.ignore_index}.",
            )
        for name in self.eval_classes or ():
            _require(
                name in self.classes,
                f"data.eval_classes names a class that is not in data.classes. Received: {name!r}."
                + did_you_mean(name, self.classes),
            )
        for hazard, traversable in (self.hazards or {}).items():
            for name in (hazard, *traversable):
                _require(
                    name in self.classes,
                    f"data.hazards names a class that is not in data.classes. Received: {name!r}."
                    + did_you_mean(name, self.classes),
                )
            _require(
                len(traversable) >= 1 and len(set(traversable)) == len(traversable) and hazard not in traversable,
                f"data.hazards.{hazard} must list the traversable classes it must not be predicted as, each once "
                f"and not {hazard!r} itself. Received: {hazard}: {list(traversable)}.",
            )
        for src, dst in (self.label_map or {}).items():
            _require(
                0 <= int(src) <= 255 and 0 <= int(dst) <= 255,
                f"data.label_map entries must map ids in 0..255. Received: {src} -> {dst}.",
            )
        for entry in self.palette or ():
            _require(
                len(entry) == 4 and all(0 <= v <= 255 for v in entry),
                f"data.palette entries must be [r, g, b, id] in 0..255. Received: {list(entry)}.",
            )
        _require(
            len(self.image_size) == 2 and all(int(s) >= 8 for s in self.image_size),
            f"data.image_size must be [height, width], each >= 8. Received: {list(self.image_size)}.",
        )
        _require(
            self.color_mode in COLOR_MODES,
            f"data.color_mode must be one of {COLOR_MODES}. Received: {self.color_mode!r}."
            + did_you_mean(self.color_mode, COLOR_MODES),
        )
        for key in ("mean", "std"):
            values = getattr(self, key)
            _require(
                len(values) in (1, self.channels),
                f"data.{key} needs 1 or {self.channels} values for color_mode={self.color_mode!r}. "
                f"Received: {list(values)}.",
            )
        _require(all(s > 0 for s in self.std), f"data.std must be > 0. Received: {list(self.std)}.")
        _require(
            all(math.isfinite(v) for v in (*self.mean, *self.std)),
            f"data.mean and data.std must be finite. Received: mean={list(self.mean)}, std={list(self.std)}.",
        )
        _require(0.0 < self.val_fraction < 1.0, f"data.val_fraction must be in (0, 1). Received: {self.val_fraction}.")
        _require(
            self.folds is None or (_is_int(self.folds) and self.folds >= 2),
            f"data.folds must be an integer >= 2 or null. Received: data.folds={self.folds!r}.",
        )
        _require(
            _is_int(self.fold) and 0 <= self.fold < (self.folds or 1),
            f"data.fold must be an integer in 0..{(self.folds or 1) - 1}"
            + ("" if self.folds else " (set data.folds for cross-validation)")
            + f". Received: data.fold={self.fold!r}.",
        )
        _require(
            self.max_images is None or self.max_images > 0,
            f"data.max_images must be positive or null. Received: {self.max_images}.",
        )
        _require(self.synthetic_count >= 2, f"data.synthetic_count must be >= 2. Received: {self.synthetic_count}.")

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    @property
    def preprocessing(self) -> Preprocessing:
        """How images of this data become model inputs (size, channels, normalisation, gray rule)."""
        return Preprocessing.from_data_config(self)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def class_colors(self) -> tuple[tuple[int, int, int], ...]:
        return self.colors or tuple(DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(self.num_classes))

    @property
    def eval_class_ids(self) -> tuple[int, ...]:
        names = self.eval_classes or self.classes
        return tuple(self.classes.index(n) for n in names)


@dataclass(frozen=True)
class AffineConfig:
    """Random affine warp; images are filled by reflection, masks sampled nearest."""

    enabled: bool = False
    shift: float = 0.1
    zoom: float = 0.1
    shear: float = 0.05
    rotate_degrees: float = 0.0

    def __post_init__(self) -> None:
        for key in ("shift", "zoom", "shear"):
            v = getattr(self, key)
            _require(0.0 <= v < 0.5, f"augment.affine.{key} must be in [0, 0.5). Received: {v}.")
        _require(
            0.0 <= self.rotate_degrees <= 180.0,
            f"augment.affine.rotate_degrees must be in [0, 180]. Received: {self.rotate_degrees}.",
        )


@dataclass(frozen=True)
class PhotometricConfig:
    """Random brightness (additive), contrast and gamma, applied to images only."""

    enabled: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 0.1

    def __post_init__(self) -> None:
        for key in ("brightness", "contrast", "gamma"):
            v = getattr(self, key)
            _require(0.0 <= v < 1.0, f"augment.photometric.{key} must be in [0, 1). Received: {v}.")


@dataclass(frozen=True)
class CopyPasteConfig:
    """Paste rare-class regions cut from other training images onto the current one."""

    enabled: bool = False
    classes: tuple[str, ...] = ()
    probability: float = 0.5

    def __post_init__(self) -> None:
        _require(
            0.0 <= self.probability <= 1.0,
            f"augment.copy_paste.probability must be in [0, 1]. Received: {self.probability}.",
        )
        _require(
            not self.enabled or bool(self.classes),
            "augment.copy_paste.enabled needs at least one class in augment.copy_paste.classes.",
        )


@dataclass(frozen=True)
class OversampleConfig:
    """Repeat training images that contain any of ``classes`` ``factor`` times per epoch."""

    classes: tuple[str, ...] = ()
    factor: int = 1
    min_pixels: int = 1

    def __post_init__(self) -> None:
        _require(1 <= self.factor <= 100, f"augment.oversample.factor must be in 1..100. Received: {self.factor}.")
        _require(self.min_pixels >= 1, f"augment.oversample.min_pixels must be >= 1. Received: {self.min_pixels}.")


@dataclass(frozen=True)
class AugmentConfig:
    """Paired image/mask augmentations, each switchable; applied to training batches only."""

    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    affine: AffineConfig = field(default_factory=AffineConfig)
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    copy_paste: CopyPasteConfig = field(default_factory=CopyPasteConfig)
    oversample: OversampleConfig = field(default_factory=OversampleConfig)


@dataclass(frozen=True)
class ModelConfig:
    """Which registered model to build, with optional overrides of its preset arguments."""

    name: str = "unet_s"
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(bool(self.name), "model.name must not be empty.")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings for the teacher (and for fine-tuning during compression)."""

    epochs: int = 12
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    seed: int = 0
    patience: int | None = None
    class_weighting: str = "inverse_sqrt"
    loss: Mapping[str, float] = field(default_factory=lambda: {"cross_entropy": 1.0})
    focal_gamma: float = 2.0
    strategy: str = "auto"
    mixed_precision: str = "auto"
    jit_compile: bool = False
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"train.epochs must be >= 1. Received: {self.epochs}.")
        _require(
            self.ema_decay is None or (not isinstance(self.ema_decay, bool) and 0 < self.ema_decay < 1),
            f"train.ema_decay must be in (0, 1), such as 0.99, or null. Received: {self.ema_decay!r}.",
        )
        _require(self.batch_size >= 1, f"train.batch_size must be >= 1. Received: {self.batch_size}.")
        for key in ("learning_rate", "weight_decay", "warmup_epochs", "focal_gamma"):
            value = getattr(self, key)
            _require(math.isfinite(value), f"train.{key} must be a finite number. Received: {value}.")
        _require(self.learning_rate > 0, f"train.learning_rate must be > 0. Received: {self.learning_rate}.")
        _require(self.weight_decay >= 0, f"train.weight_decay must be >= 0. Received: {self.weight_decay}.")
        _require(self.warmup_epochs >= 0, f"train.warmup_epochs must be >= 0. Received: {self.warmup_epochs}.")
        _require(self.focal_gamma >= 0, f"train.focal_gamma must be >= 0. Received: {self.focal_gamma}.")
        _require(
            self.patience is None or self.patience >= 1,
            f"train.patience must be >= 1 or null. Received: {self.patience}.",
        )
        _require(
            self.class_weighting in CLASS_WEIGHTINGS,
            f"train.class_weighting must be one of {CLASS_WEIGHTINGS}. Received: {self.class_weighting!r}."
            + did_you_mean(self.class_weighting, CLASS_WEIGHTINGS),
        )
        check_loss_terms(self.loss, "train.loss")
        strategies = ("auto", "none", "mirrored", "multiworker")
        _require(
            self.strategy in strategies,
            f"train.strategy must be one of {strategies}. Received: {self.strategy!r}."
            + did_you_mean(self.strategy, strategies),
        )
        precisions = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
        _require(
            self.mixed_precision in precisions,
            f"train.mixed_precision must be one of {precisions}. Received: {self.mixed_precision!r}."
            + did_you_mean(self.mixed_precision, precisions),
        )


@dataclass(frozen=True)
class Config:
    """A whole run: data, augmentation, model and training settings."""

    task: str = "synthetic-terrain"
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for section, names in (
            ("augment.copy_paste.classes", self.augment.copy_paste.classes),
            ("augment.oversample.classes", self.augment.oversample.classes),
        ):
            for name in names:
                _require(
                    name in self.data.classes,
                    f"{section} names a class that is not in data.classes. Received: {name!r}."
                    + did_you_mean(name, self.data.classes),
                )

    # === Serialisation ===

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        # PyYAML is optional ([train] extra), imported on use as in roverlite._yaml
        import yaml

        text = yaml.dump(self.to_dict(), Dumper=config_dumper(), sort_keys=False, default_flow_style=None)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Config":
        return from_plain(cls, raw, "")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "Config":
        return load_config(path)

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


# === Conversion between dataclasses and plain YAML data ===


def to_plain(obj: Any) -> Any:
    """Turn a config dataclass (recursively) into dicts, lists and scalars."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def from_plain(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass ``cls`` from plain data, refusing unknown keys with a suggestion."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"Expected a mapping for {where or 'the config'}. Received: {type(raw).__name__} {_short_repr(raw)}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            full = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"Unknown config key {full!r}." + did_you_mean(key, list(fields)))
        kwargs[key] = _coerce(hints[key], value, f"{where}.{key}" if where else key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if dataclasses.is_dataclass(hint):
        return from_plain(hint, value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"Expected a list for {where}. Received: {_short_repr(value)}.")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"Expected {len(args)} values for {where}. Received: {list(value)}.")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if origin in (collections.abc.Mapping, dict) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"Expected a mapping for {where}. Received: {_short_repr(value)}.")
        if args:
            return {_coerce(args[0], k, where): _coerce(args[1], v, where) for k, v in value.items()}
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Expected true or false for {where}. Received: {_short_repr(value)}.")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
                if len(value.strip()) > MAX_NUMBER_CHARS:
                    raise ConfigError(
                        f"Expected an integer for {where}. Received: a number of {len(value.strip())} digits."
                    )
                return int(value)
            raise ConfigError(f"Expected an integer for {where}. Received: {_short_repr(value)}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Expected a number for {where}. Received: {_short_repr(value)}.")
        try:
            return float(value)
        except OverflowError:
            digits = int(abs(value).bit_length() * math.log10(2)) + 1  # str() refuses > 4,300 digits
            raise ConfigError(f"Expected a number for {where}. Received: an integer of about {digits} digits.") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"Expected a string for {where}. Received: {_short_repr(value)}.")
        return value
    return value


def _short_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a one-line message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# === Loading with overrides ===


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a plain config dict."""
    # PyYAML is optional ([train] extra), imported on use as in roverlite._yaml
    import yaml

    out = to_plain(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Expected an override as section.key=value. Received: {item!r}.")
        dotted, text = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Cannot set {dotted!r}: {key!r} is not a section.")
        try:
            node[keys[-1]] = parse_yaml(text, f"--set {dotted.strip()}", key=dotted.strip())
        except (yaml.YAMLError, RecursionError):
            raise ConfigError(
                f"Cannot parse the value of {dotted!r} as YAML. Expected e.g. {dotted}=3 or {dotted}=[1, 2]. "
                f"Received: {text!r}."
            ) from None
    return out


def load_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> Config:
    """Load a YAML config (or the built-in synthetic defaults when ``path`` is None).

    Relative ``data.path`` and ``data.quarantine`` values are resolved against the config file's
    folder, so a config works from any current directory.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        # PyYAML is optional ([train] extra), imported on use as in roverlite._yaml
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found. Expected a YAML file. Received: {str(path)!r}.")
        with open(path, "rb") as fh:
            content = fh.read(MAX_CONFIG_BYTES + 1)
        if len(content) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"Config {str(path)!r} is too large. Expected a YAML file of at most {MAX_CONFIG_BYTES} bytes. "
                f"Received: {path.stat().st_size} bytes."
            )
        try:
            raw = parse_yaml(content.decode("utf-8"), f"Config {str(path)!r}") or {}
        except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
            # RecursionError: PyYAML composes nested collections recursively (a few hundred levels).
            raise ConfigError(f"Config {str(path)!r} is not valid YAML (UTF-8): {err}".splitlines()[0]) from None
        if not isinstance(raw, dict):
            raise ConfigError(f"Expected a mapping at the top of {str(path)!r}. Received: {type(raw).__name__}.")
        data = raw.get("data")
        if isinstance(data, dict):
            for key in ("path", "quarantine"):
                value = data.get(key)
                if isinstance(value, str) and "\x00" in value:
                    raise ConfigError(f"data.{key} holds a NUL character. Expected a path. Received: {value!r}.")
                if isinstance(value, str) and value and not os.path.isabs(value):
                    data[key] = str((path.parent / value).resolve())
    raw = apply_overrides(raw, overrides)
    return Config.from_dict(raw)
