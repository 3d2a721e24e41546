"""On-device out-of-distribution monitor: "this frame is not like the frames the model was checked on".

A rover must not trust a mask computed on a frame unlike anything it was trained on: a black or
saturated frame, dust on the lens, a frame of noise. :class:`OodMonitor` scores every frame from
what a prediction already produces, the normalised model input ``x`` and the logits, with no
extra model run:

* from the logits: mean max-softmax over pixels, and how far the share of each predicted class
  lies from the calibration frames' average (total variation);
* from the input: mean (brightness), standard deviation (contrast), the share of black and of
  saturated pixels, the mean absolute difference of neighbouring pixels (sharpness: blur lowers
  it, noise raises it) and the total-variation distance of a 16-bin histogram to the
  calibration frames' average histogram.

Each feature becomes a robust z-score against the calibration frames (median and scaled MAD,
with a floor per feature so a feature constant on the calibration frames does not divide by
zero); two-sided for features that may be unusual either way (a black frame is *over*-confident),
one-sided for distances and black/saturated shares. The frame's score is the largest z-score, and
the feature behind it is reported, so a flag says why. Thresholds are the score's quantiles on
the calibration frames at chosen false-alarm rates (1 % and 5 % by default); a frame is flagged
when its score is above the threshold of ``flag_rate``. A non-finite score (NaN logits from a
broken kernel) is always flagged.

Statistics use about 2,048 pixels (every ``stride``-th row, whole) and 256 logit vectors (every
``logit_stride``-th row and column) per frame, a grid fixed at calibration and stored in the
monitor, so the monitor costs a small, fixed share of an inference whatever the model's size. At
that size numpy calls, not pixels, are the cost: the statistics take about twenty (one ``bincount``
and one small matrix product give every pixel statistic; max-softmax is ``1 / sum(e^(l - top))``
on one class-major copy), about 29 us per frame in a tight loop on a busy 2-core x86, 15 % less
than the first version with bit-identical features (``benchmarks/ood.py`` measures it right after
a model call, where it costs about twice as much).

Calibration happens at export, on the self-check images the artifact has just run on
(:class:`OodCollector`, fed by :func:`roverlite.export.verify.self_check`), and the monitor
travels in the sidecar's ``ood`` field as a plain dict (:meth:`OodMonitor.to_dict` /
:meth:`OodMonitor.from_dict`). NumPy only: this module runs on the robot.

Example:
    >>> collector = OodCollector(mean=(0.5,), std=(0.25,), pixel_scale=1 / 255)
    >>> for x, logits in checked_frames:                   # doctest: +SKIP
    ...     collector.add(x, logits)
    >>> monitor = collector.finish()                        # doctest: +SKIP
    >>> monitor.score(x, logits).flagged                    # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_FALSE_ALARM_RATES",
    "FEATURES",
    "MIN_CALIBRATION_IMAGES",
    "OodCollector",
    "OodMonitor",
    "OodResult",
]

OOD_VERSION = 1
# Feature name -> (direction, floor of its scale). "both": unusual either way; "high": only large
# values are unusual. Floors: 0.01 for shares and probabilities in [0, 1], pixel levels (0..255)
# for brightness, contrast and sharpness.
_FEATURES: dict[str, tuple[str, float]] = {
    "max_softmax": ("both", 0.01),
    "class_shift": ("high", 0.01),
    "brightness": ("both", 1.0),
    "contrast": ("both", 1.0),
    "sharpness": ("both", 0.1),
    "black": ("high", 0.01),
    "saturated": ("high", 0.01),
    "histogram": ("high", 0.01),
}
FEATURES = tuple(_FEATURES)
DIRECTIONS = ("both", "high")
DEFAULT_FALSE_ALARM_RATES = (0.01, 0.05)
# Fewer calibration frames than this give no monitor: a 1 % quantile of 4 frames means nothing.
MIN_CALIBRATION_IMAGES = 8
# Pixel levels (0..255) at or below which a pixel is black, at or above which it is saturated.
BLACK_LEVEL, SATURATED_LEVEL = 5, 250
HISTOGRAM_BINS = 16
# Samples per frame (every stride-th row and column): enough for stable means and shares, few
# enough that the monitor costs ~0.1 ms. Logits cost more per sample than pixels.
SAMPLE_PIXELS, SAMPLE_LOGITS = 2048, 256
_MAD_TO_SIGMA = 1.4826
_MAX_LIST = 256


def _level_table() -> np.ndarray:
    """``(256, 20)``: a 256-level histogram times it gives the sums of levels and of squared levels,
    the black and saturated counts, and the 16-bin histogram (exact: integer counts in float64)."""
    levels = np.arange(256, dtype=np.float64)
    coarse = np.repeat(np.eye(HISTOGRAM_BINS), 256 // HISTOGRAM_BINS, axis=0)
    columns = [levels, levels * levels, levels <= BLACK_LEVEL, levels >= SATURATED_LEVEL]
    return np.ascontiguousarray(np.column_stack([*columns, coarse]), np.float64)


_LEVEL_TABLE = _level_table()


@dataclass(frozen=True)
class OodResult:
    """One frame's verdict.

    Attributes:
        score: the largest robust z-score of the frame's features (``nan`` when the logits were not
            finite, which is always flagged).
        flagged: ``score`` above the monitor's threshold at its ``flag_rate``.
        feature: the feature with the largest z-score: why the frame looks unusual.
    """

    score: float
    flagged: bool
    feature: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a non-finite score becomes ``None``)."""
        score = round(self.score, 4) if math.isfinite(self.score) else None
        return {"score": score, "flagged": self.flagged, "feature": self.feature}


@dataclass(frozen=True)
class OodMonitor:
    """Calibrated statistics and thresholds; build with :class:`OodCollector` or :meth:`from_dict`.

    Attributes:
        features: names from :data:`FEATURES` combined into the score.
        center, scale, direction: per feature, the calibration median, the robust spread (scaled
            MAD, floored) and ``"both"`` or ``"high"``.
        stride, logit_stride: pixel statistics read every ``stride``-th row of the input (whole
            rows), logit statistics every ``logit_stride``-th row and column.
        level_scale, level_offset: per channel, ``pixel level = x * level_scale + level_offset``
            (the inverse of the artifact's normalisation).
        histogram_reference: the calibration frames' mean 16-bin histogram of pixel levels (sums to 1).
        class_reference: the calibration frames' mean share of each predicted class (sums to 1).
        false_alarm_rates, thresholds: score thresholds at each false-alarm rate on the
            calibration frames (rates ascending).
        flag_rate: the false-alarm rate whose threshold raises ``flagged``.
        images: calibration frames behind the statistics.
    """

    features: tuple[str, ...]
    center: tuple[float, ...]
    scale: tuple[float, ...]
    direction: tuple[str, ...]
    stride: int
    logit_stride: int
    level_scale: tuple[float, ...]
    level_offset: tuple[float, ...]
    histogram_reference: tuple[float, ...]
    class_reference: tuple[float, ...]
    false_alarm_rates: tuple[float, ...]
    thresholds: tuple[float, ...]
    flag_rate: float
    images: int
    _arrays: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        self._arrays.update(
            center=np.asarray(self.center, np.float64),
            scale=np.asarray(self.scale, np.float64),
            two_sided=np.asarray([d == "both" for d in self.direction]),
            pick=np.asarray([FEATURES.index(f) for f in self.features]),
            level_scale=np.asarray(self.level_scale, np.float32),
            # +0.5: truncating to int then rounds to the nearest level.
            level_offset=np.asarray(self.level_offset, np.float32) + np.float32(0.5),
            rows=tuple(zip((FEATURES.index(f) for f in self.features), self.center, self.scale,
                           (d == "both" for d in self.direction))),
            threshold=self.threshold,
        )

    # === Scoring ===

    @property
    def threshold(self) -> float:
        """The score above which a frame is flagged (the threshold at ``flag_rate``)."""
        return self.thresholds[self.false_alarm_rates.index(self.flag_rate)]

    def feature_values(self, x: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """The raw features of :data:`FEATURES` (all of them, in that order) for one frame."""
        return np.asarray(self._values(x, logits), np.float64)

    def _values(self, x: np.ndarray, logits: np.ndarray) -> list[float]:
        a = self._arrays
        stats = _frame_statistics(x, logits, self.stride, self.logit_stride, a["level_scale"], a["level_offset"])
        return _features(stats, self.histogram_reference, self.class_reference)

    def z_scores(self, values: np.ndarray) -> np.ndarray:
        """Robust z-scores of :meth:`feature_values` for the monitor's ``features`` (one-sided ones >= 0)."""
        a = self._arrays
        z = (np.asarray(values, np.float64)[..., a["pick"]] - a["center"]) / a["scale"]
        return np.where(a["two_sided"], np.abs(z), np.maximum(z, 0.0))

    def score(self, x: np.ndarray, logits: np.ndarray) -> OodResult:
        """Score one frame from its normalised model input ``x`` ((1,) H, W, C) and logits ((1,) H, W, K).

        Raises:
            ValueError: ``x`` or ``logits`` not one frame, or channels / classes other than calibrated.
        """
        values = self._values(x, logits)
        # Nine numbers: plain Python is several times faster than numpy calls on arrays this small.
        best, best_k = -1.0, 0
        for k, (i, center, scale, two_sided) in enumerate(self._arrays["rows"]):
            z = (values[i] - center) / scale
            z = abs(z) if two_sided else max(z, 0.0)
            if not math.isfinite(z):
                return OodResult(score=math.nan, flagged=True, feature="non_finite")
            if z > best:
                best, best_k = z, k
        return OodResult(score=best, flagged=best > self._arrays["threshold"], feature=self.features[best_k])

    def flags(self, scores: Sequence[float] | np.ndarray) -> dict[float, np.ndarray]:
        """Per false-alarm rate, which of ``scores`` lie above its threshold (non-finite ones always do)."""
        scores = np.asarray(scores, np.float64)
        return {rate: ~(scores <= t) for rate, t in zip(self.false_alarm_rates, self.thresholds)}

    # === Serialisation ===

    def to_dict(self) -> dict[str, Any]:
        """The sidecar's ``ood`` field: plain JSON values, read back by :meth:`from_dict`."""
        return {
            "version": OOD_VERSION,
            "score": "largest robust z-score of the frame features",
            "images": self.images,
            "stride": self.stride,
            "logit_stride": self.logit_stride,
            "features": list(self.features),
            "center": list(self.center),
            "scale": list(self.scale),
            "direction": list(self.direction),
            "pixel_levels": {"scale": list(self.level_scale), "offset": list(self.level_offset)},
            "histogram_reference": list(self.histogram_reference),
            "class_reference": list(self.class_reference),
            "false_alarm_rates": list(self.false_alarm_rates),
            "thresholds": list(self.thresholds),
            "flag_rate": self.flag_rate,
        }

    @classmethod
    def from_dict(cls, value: Any) -> OodMonitor:
        """Validate a decoded JSON value (the sidecar's ``ood``) and build the monitor.

        Raises:
            ValueError: naming the first missing or invalid field; nothing else, for any input.
        """
        r = _Reader(value)
        version = r.integer("version", 1, 1000)
        if version != OOD_VERSION:
            r.fail("version", f"{OOD_VERSION} (this reader's version)", version)
        levels = r.mapping("pixel_levels")
        return cls(
            features=tuple(r.strings("features", FEATURES)),
            center=r.numbers("center"),
            scale=r.numbers("scale"),
            direction=tuple(r.strings("direction", DIRECTIONS, unique=False)),
            stride=r.integer("stride", 1, 1 << 16),
            logit_stride=r.integer("logit_stride", 1, 1 << 16),
            level_scale=r.numbers("scale", levels, "pixel_levels."),
            level_offset=r.numbers("offset", levels, "pixel_levels."),
            histogram_reference=r.numbers("histogram_reference"),
            class_reference=r.numbers("class_reference"),
            false_alarm_rates=r.numbers("false_alarm_rates"),
            thresholds=r.numbers("thresholds"),
            flag_rate=r.number("flag_rate"),
            images=r.integer("images", MIN_CALIBRATION_IMAGES, 1 << 40),
        )


class OodCollector:
    """Gathers the statistics of calibration frames and turns them into an :class:`OodMonitor`.

    Args:
        mean, std, pixel_scale: the artifact's normalisation, ``x = (pixel * pixel_scale - mean) / std``
            (one value, or one per channel), so the monitor reads pixel levels back from ``x``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pixel_scale: float = 1.0 / 255.0) -> None:
        mean_a, std_a = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
        if mean_a.size < 1 or mean_a.size != std_a.size or not (std_a > 0).all() or not pixel_scale > 0:
            raise ValueError(
                "Expected one mean and one positive std per channel and pixel_scale > 0. "
                f"Received: mean={list(mean)}, std={list(std)}, pixel_scale={pixel_scale}."
            )
        self.level_scale = _floats(std_a / pixel_scale)
        self.level_offset = _floats(mean_a / pixel_scale)
        self._strides: tuple[int, int] | None = None
        self._stats: list[tuple[list[float], list[float], np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._stats)

    def add(self, x: np.ndarray, logits: np.ndarray) -> None:
        """One calibration frame: its normalised model input and the artifact's logits for it."""
        x = _frame(x, "x")
        if self._strides is None:
            area = x.shape[0] * x.shape[1]
            # Pixels: whole rows, every stride-th (H / stride * W samples); logits: a 2-D grid.
            self._strides = (max(1, int(round(area / SAMPLE_PIXELS))), _stride(area, SAMPLE_LOGITS))
        scale = np.asarray(self.level_scale, np.float32)
        offset = np.asarray(self.level_offset, np.float32) + np.float32(0.5)
        self._stats.append(_frame_statistics(x, logits, *self._strides, scale, offset))

    def finish(
        self, false_alarm_rates: Sequence[float] = DEFAULT_FALSE_ALARM_RATES, flag_rate: float | None = None
    ) -> OodMonitor | None:
        """The calibrated monitor, or ``None`` with fewer than :data:`MIN_CALIBRATION_IMAGES` frames.

        Args:
            false_alarm_rates: rates in (0, 0.5] at which thresholds are set.
            flag_rate: one of them, the rate that raises ``flagged`` (default: the smallest).

        Raises:
            ValueError: invalid rates.
        """
        rates = tuple(sorted(float(r) for r in false_alarm_rates))
        if not rates or not all(0 < r <= 0.5 for r in rates) or len(set(rates)) != len(rates):
            raise ValueError(f"Expected distinct false-alarm rates in (0, 0.5]. Received: {list(false_alarm_rates)}.")
        flag_rate = rates[0] if flag_rate is None else float(flag_rate)
        if flag_rate not in rates:
            raise ValueError(f"Expected flag_rate to be one of {list(rates)}. Received: {flag_rate}.")
        finite = [s for s in self._stats if all(map(math.isfinite, s[0]))]
        if len(finite) < MIN_CALIBRATION_IMAGES:  # too few frames, or NaN logits on most of them
            return None
        hist_ref = _normalised_mean(np.asarray([s[1] for s in finite], np.float64))
        class_ref = _normalised_mean(np.stack([s[2] for s in finite]))
        values = np.asarray([_features(s, hist_ref.tolist(), class_ref.tolist()) for s in finite], np.float64)
        center = np.median(values, axis=0)
        floors = np.asarray([floor for _, floor in _FEATURES.values()])
        scale = np.maximum(_MAD_TO_SIGMA * np.median(np.abs(values - center), axis=0), floors)
        fields = {
            "features": FEATURES, "center": _floats(center), "scale": _floats(scale),
            "direction": tuple(d for d, _ in _FEATURES.values()),
            "stride": self._strides[0], "logit_stride": self._strides[1],
            "level_scale": self.level_scale, "level_offset": self.level_offset,
            "histogram_reference": _floats(hist_ref), "class_reference": _floats(class_ref),
            "false_alarm_rates": rates, "flag_rate": flag_rate, "images": len(finite),
        }
        scores = OodMonitor(**fields, thresholds=(0.0,) * len(rates)).z_scores(values).max(axis=1)
        # "higher": each threshold is a calibration score, so at most `rate` of the frames lie above it.
        thresholds = tuple(float(np.quantile(scores, 1.0 - r, method="higher")) for r in rates)
        return OodMonitor(**fields, thresholds=thresholds)


# === Statistics ===


def _stride(area: int, samples: int) -> int:
    return max(1, int(round(math.sqrt(area / samples))))


def _frame(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"Expected {what} of one frame as (1, H, W, C) or (H, W, C). Received: shape={array.shape}.")
    return array


def _frame_statistics(
    x: np.ndarray, logits: np.ndarray, stride: int, logit_stride: int, level_scale: np.ndarray, level_offset: np.ndarray,
) -> tuple[list[float], list[float], np.ndarray]:
    """``(scalars, 16-bin histogram, predicted-class counts)`` of one frame.

    Pixel statistics read every ``stride``-th row whole (neighbouring pixels, so sharpness sees
    one-pixel detail), logit statistics every ``logit_stride``-th row and column: a fixed grid set
    once at calibration and stored in the monitor, so scoring reads the very pixels calibration
    read. Scalars: mean max-softmax, brightness, contrast, sharpness (mean absolute difference of
    horizontal neighbours, in levels), black share, saturated share.

    At this size (~2,000 pixels, ~256 logit vectors) numpy calls, not pixels, are the cost, so the
    pixel statistics all come from one integer image of levels through one ``bincount`` and one
    product with :data:`_LEVEL_TABLE` (sums of levels and squared levels, black and saturated
    counts, the 16 coarse bins), and the logit ones from a single class-major copy.
    """
    x, logits = _frame(x, "x"), _frame(logits, "logits")
    if x.shape[-1] != level_scale.size and level_scale.size != 1:
        raise ValueError(f"Expected {level_scale.size} input channel(s), as calibrated. Received: {x.shape[-1]}.")
    k = logits.shape[-1]
    if k < 2:
        raise ValueError(f"Expected logits with at least 2 classes. Received: shape={logits.shape}.")
    real = x[::stride] * level_scale
    real += level_offset
    # Pixels of a frame the Segmenter accepted lie in 0..255, so real is in [0.5, 255.5]: uint8
    # truncation rounds without a clip, and the histogram has exactly 256 levels.
    hist = np.bincount(real.astype(np.uint8).ravel(), minlength=256)
    n = real.size
    total_level, total_squared, black, saturated, *coarse = (hist @ _LEVEL_TABLE).tolist()
    mean = total_level / n
    variance = max(total_squared / n - mean * mean, 0.0)
    if real.shape[1] > 1:
        steps = real[:, 1:] - real[:, :-1]
        sharpness = float(np.add.reduce(np.abs(steps, out=steps), axis=None)) / steps.size
    else:
        sharpness = 0.0
    # Class-major (K, pixels): reducing over K along contiguous rows is ~10x faster than over a
    # trailing axis of 4.
    lg = np.ascontiguousarray(logits[::logit_stride, ::logit_stride].transpose(2, 0, 1), np.float32).reshape(k, -1)
    lg -= np.maximum.reduce(lg, axis=0)
    # Each pixel's top class (a tie counts for each); add.reduce of booleans counts them as integers,
    # several times faster than count_nonzero along an axis.
    classes = np.add.reduce(lg == 0, axis=1)
    total = np.add.reduce(np.exp(lg, out=lg), axis=0)  # max softmax = 1 / sum(e^(l - top))
    msp = float(np.add.reduce(np.reciprocal(total, out=total))) / total.size
    scalars = [msp, mean, math.sqrt(variance), sharpness, black / n, saturated / n]
    return scalars, coarse, classes


def _features(
    stats: tuple[list[float], list[float], np.ndarray], hist_ref: Sequence[float], class_ref: Sequence[float]
) -> list[float]:
    """All of :data:`FEATURES`, in order, from :func:`_frame_statistics` and the references."""
    scalars, coarse, classes = stats
    msp, brightness, contrast, sharpness, black, saturated = scalars
    if classes.size != len(class_ref):
        raise ValueError(f"Expected logits of {len(class_ref)} classes, as calibrated. Received: {classes.size}.")
    return [msp, _distance(classes.tolist(), class_ref), brightness, contrast, sharpness, black, saturated,
            _distance(coarse, hist_ref)]


def _distance(counts: Sequence[float], reference: Sequence[float]) -> float:
    """Total-variation distance between the shares of ``counts`` and ``reference`` (in Python: few values)."""
    total = max(sum(counts), 1)
    return 0.5 * sum(abs(c / total - r) for c, r in zip(counts, reference))


def _normalised_mean(counts: np.ndarray) -> np.ndarray:
    """Mean over rows of each row's shares, for counts ``(N, bins)`` (sums to 1)."""
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    mean = shares.mean(axis=0)
    return mean / mean.sum() if mean.sum() > 0 else np.full(mean.shape, 1.0 / mean.size)


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values).ravel())


# === Validation ===


def _validate(m: OodMonitor) -> None:
    """Reject impossible monitors; every problem is a ValueError naming the field."""
    def fail(key: str, expected: str, received: Any) -> None:
        raise ValueError(f"Invalid OOD monitor: field {key!r}. Expected {expected}. Received: {received!r}.")

    n = len(m.features)
    if n < 1 or len(set(m.features)) != n or not all(f in FEATURES for f in m.features):
        fail("features", f"distinct names from {list(FEATURES)}", m.features)
    for key in ("center", "scale", "direction"):
        if len(getattr(m, key)) != n:
            fail(key, f"{n} values (one per feature)", getattr(m, key))
    if not all(d in DIRECTIONS for d in m.direction):
        fail("direction", f"each one of {list(DIRECTIONS)}", m.direction)
    numbers = ("center", "scale", "level_scale", "level_offset", "histogram_reference", "class_reference",
               "false_alarm_rates", "thresholds")
    for key in numbers:
        values = getattr(m, key)
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            fail(key, "finite numbers", values)
    if not all(v > 0 for v in m.scale):
        fail("scale", "numbers > 0", m.scale)
    if not all(v > 0 for v in m.level_scale):
        fail("pixel_levels.scale", "numbers > 0", m.level_scale)
    if len(m.level_offset) != len(m.level_scale):
        fail("pixel_levels.offset", f"{len(m.level_scale)} values (one per channel, like pixel_levels.scale)", m.level_offset)
    if len(m.histogram_reference) != HISTOGRAM_BINS or not all(v >= 0 for v in m.histogram_reference):
        fail("histogram_reference", f"{HISTOGRAM_BINS} shares >= 0", m.histogram_reference)
    if not len(m.class_reference) >= 2 or not all(v >= 0 for v in m.class_reference):
        fail("class_reference", "one share >= 0 per class (at least 2)", m.class_reference)
    rates = m.false_alarm_rates
    if not rates or not all(0 < r <= 0.5 for r in rates) or list(rates) != sorted(set(rates)):
        fail("false_alarm_rates", "distinct ascending rates in (0, 0.5]", rates)
    if len(m.thresholds) != len(rates):
        fail("thresholds", f"{len(rates)} values (one per false-alarm rate)", m.thresholds)
    if m.flag_rate not in rates:
        fail("flag_rate", f"one of the false_alarm_rates {list(rates)}", m.flag_rate)
    for key in ("stride", "logit_stride"):
        value = getattr(m, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            fail(key, "an integer >= 1", value)
    if isinstance(m.images, bool) or not isinstance(m.images, int) or m.images < MIN_CALIBRATION_IMAGES:
        fail("images", f"an integer >= {MIN_CALIBRATION_IMAGES}", m.images)


class _Reader:
    """Typed readers over the ``ood`` dict that turn every problem into one ValueError."""

    def __init__(self, value: Any) -> None:
        if not isinstance(value, dict):
            self.fail("", "a JSON object", value)
        self.root = value

    def fail(self, key: str, expected: str, received: Any) -> None:
        shown = repr(received)
        shown = shown if len(shown) <= 120 else shown[:117] + "..."
        raise ValueError(f"Invalid OOD monitor: field {key or '(root)'!r}. Expected {expected}. Received: {shown}.")

    def get(self, key: str, obj: Mapping[str, Any] | None = None, prefix: str = "") -> Any:
        obj = self.root if obj is None else obj
        if key not in obj:
            raise ValueError(f"Invalid OOD monitor: missing field {prefix + key!r}.")
        return obj[key]

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.get(key)
        if not isinstance(value, dict):
            self.fail(key, "a JSON object", value)
        return value

    def integer(self, key: str, low: int, high: int) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"an integer in {low}..{high}", value)
        return value

    def number(self, key: str, obj: Mapping[str, Any] | None = None, prefix: str = "") -> float:
        return self._number(self.get(key, obj, prefix), prefix + key)

    def _number(self, value: Any, key: str) -> float:
        number = math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.nan
        if not math.isfinite(number):
            self.fail(key, "a finite number", value)
        return number

    def numbers(self, key: str, obj: Mapping[str, Any] | None = None, prefix: str = "") -> tuple[float, ...]:
        value = self.get(key, obj, prefix)
        if not isinstance(value, list) or not 1 <= len(value) <= _MAX_LIST:
            self.fail(prefix + key, f"a list of 1..{_MAX_LIST} numbers", value)
        return tuple(self._number(v, prefix + key) for v in value)

    def strings(self, key: str, options: tuple[str, ...], unique: bool = True) -> list[str]:
        value = self.get(key)
        if (
            not isinstance(value, list) or not 1 <= len(value) <= len(FEATURES)
            or not all(isinstance(v, str) and v in options for v in value)
            or (unique and len(set(value)) != len(value))
        ):
            self.fail(key, f"a list of {'distinct ' if unique else ''}names from {list(options)}", value)
        return value
