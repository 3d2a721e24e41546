"""Every export checks itself: the artifact, run through ``roverlite.deploy``, against the Keras model.

Float formats (float32, float16) must reproduce the Keras logits: the check reports the max and
mean absolute logit error and the argmax agreement, and passes when the max error is within
``atol + rtol * max|keras logit|`` and agreement is high. Quantized formats (dynamic range, int8)
are judged by what matters on the robot, per-class IoU: the artifact's IoU against the truth
masks minus the Keras model's IoU against the same masks. Without masks the Keras predictions
serve as truth (Keras IoU is then 1 for every present class, so the delta is the agreement lost).
With ``data.hazards`` declared, both models' hazard miss and false-hazard rates are reported
(``keras_hazards``, ``artifact_hazards``); they are not a pass rule here (the recipe gate's
``max_hazard_miss_increase`` is).

A drop measured on a few images is noisy, above all for a rare class: on the first 32 AI4Mars
validation images a teacher's int8 export "lost" 0.052 mIoU and 0.107 big-rock IoU, and 0.0004
mIoU on all 1,800. So the quantized check is a paired bootstrap over images: per-image confusion
matrices of Keras and artifact are resampled together (``bootstrap_resamples`` times) and give a
``confidence`` interval of every drop. A check fails only when the whole interval lies above the
tolerance (the drop is real); an interval that straddles it is *inconclusive*, recorded with a
warning, and passes. How many images to check is :func:`check_image_count`'s business: the whole
check split up to :data:`DEFAULT_CHECK_IMAGES`, then a seeded subset (:func:`choose_check_images`).

The artifact is run exactly as a device runs it: :class:`roverlite.deploy.Segmenter` verifies the
sidecar hash, normalises and quantizes per the sidecar, and dequantizes the output.

The same run calibrates the artifact's out-of-distribution monitor (:mod:`roverlite.deploy.ood`)
from the check images and the artifact's own logits, with no extra model run: the result's
``ood`` entry (``None`` with fewer than 8 check images), which the exporter moves into the
sidecar's ``ood`` field.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.deploy.ood import OodCollector
from roverlite.deploy.segmenter import Segmenter
from roverlite.export.formats import ExportFormat
from roverlite.core.metrics import StreamingConfusion, confusion_matrix

__all__ = [
    "DEFAULT_CHECK_IMAGES", "Tolerances", "check_image_count", "choose_check_images", "keras_logits", "self_check",
]

logger = logging.getLogger(__name__)

# Check images by default: every image of a small check split, a seeded subset of a large one.
DEFAULT_CHECK_IMAGES = 512
# Float32 logits held per check set (Keras reference + one artifact's): at most 2**26 values each.
_LOGIT_BUDGET = 2**26


@dataclass(frozen=True)
class Tolerances:
    """Pass limits of the self-check.

    Attributes:
        float32_atol, float32_rtol: float32 formats pass when max |logit error| <=
            ``atol + rtol * max|keras logit|`` (kernels reorder sums; XNNPACK differs from TF by
            ~1e-6 relative).
        float16_atol, float16_rtol: the same for float16 weights (~3 significant digits).
        min_argmax_agreement: float formats: fraction of pixels whose class must match Keras
            (below 1 only for near-ties).
        max_miou_drop: quantized formats: largest allowed drop of mIoU (eval classes) vs Keras.
        max_class_iou_drop: quantized formats: largest allowed IoU drop of any eval class.
        confidence: quantized formats: coverage of the bootstrap interval of each drop, in
            ``(0, 1)``; a check fails when the interval's low end is above the tolerance.
        bootstrap_resamples: image resamples behind the interval (>= 100).
        min_class_images: quantized formats: a class (and mIoU) is judged only when at least this
            many check images hold it; with fewer, resampling images cannot tell noise from a
            real drop, so the result is recorded as inconclusive.
    """

    float32_atol: float = 1e-4
    float32_rtol: float = 1e-4
    float16_atol: float = 1e-2
    float16_rtol: float = 1e-2
    min_argmax_agreement: float = 0.99
    max_miou_drop: float = 0.03
    max_class_iou_drop: float = 0.10
    confidence: float = 0.95
    bootstrap_resamples: int = 1000
    min_class_images: int = 5

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Expected tolerance {key} to be a finite number >= 0. Received: {value!r}.")
        if self.min_argmax_agreement > 1:
            raise ValueError(
                f"Expected min_argmax_agreement in [0, 1]. Received: {self.min_argmax_agreement}."
            )
        if not 0 < self.confidence < 1:
            raise ValueError(f"Expected confidence in (0, 1). Received: confidence={self.confidence}.")
        if not isinstance(self.bootstrap_resamples, int) or self.bootstrap_resamples < 100:
            raise ValueError(
                f"Expected bootstrap_resamples to be an integer >= 100. Received: {self.bootstrap_resamples!r}."
            )
        if not isinstance(self.min_class_images, int) or self.min_class_images < 1:
            raise ValueError(f"Expected min_class_images to be an integer >= 1. Received: {self.min_class_images!r}.")


def check_image_count(available: int, limit: int | None, values_per_image: int) -> int:
    """How many of ``available`` check images to use: at most ``limit`` (``None``: no cap) and at
    most what keeps one set of float32 logits within 256 MiB (``values_per_image`` = H * W * classes).

    Raises:
        ValueError: ``limit`` below 1.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"Expected the check image limit to be a positive integer or None. Received: {limit!r}.")
    by_memory = max(1, _LOGIT_BUDGET // max(1, int(values_per_image)))
    return min(int(available), by_memory, int(available) if limit is None else limit)


def choose_check_images(available: int, count: int, seed: int = 0) -> np.ndarray:
    """Indices of ``count`` of ``available`` images: all of them in order, or a seeded, sorted subset.

    A uniform subset (not the first images of the split) so the check sees the split's mix of scenes
    and its rare classes at their usual rate.
    """
    if count >= available:
        return np.arange(available)
    return np.sort(np.random.default_rng(seed).choice(available, size=count, replace=False))


def keras_logits(model: Any, normalised: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Float32 logits of the Keras model for normalised ``(N, H, W, C)`` inputs."""
    fixed = model.inputs[0].shape[0]
    batch_size = int(fixed) if fixed else batch_size  # a model built with batch_size=1 takes only that
    chunks = [
        np.asarray(model(normalised[i : i + batch_size], training=False), dtype=np.float32)
        for i in range(0, len(normalised), batch_size)
    ]
    return np.concatenate(chunks, axis=0)


def self_check(
    fmt: ExportFormat,
    artifact: str,
    reference_logits: np.ndarray,
    images: np.ndarray,
    masks: np.ndarray | None,
    data_cfg: DataConfig,
    tolerances: Tolerances,
) -> dict[str, Any]:
    """Run ``artifact`` on ``images`` through roverlite.deploy and judge it against Keras.

    Args:
        fmt: the format row (its precision picks the check).
        artifact: the written artifact with its sidecar.
        reference_logits: Keras logits for ``images`` (see :func:`keras_logits`).
        images: uint8 ``(N, H, W, C)`` at the model's size.
        masks: uint8 ``(N, H, W)`` truth, or ``None`` to use the Keras predictions as truth.
        data_cfg: classes, ignore label and eval classes.
        tolerances: the pass limits.

    Returns:
        A JSON-ready dict with ``passed`` (bool), ``failures`` (reasons), the measurements and
        ``ood`` (the calibrated OOD monitor as a dict, or ``None``); ``error`` instead of
        measurements when the artifact could not run at all.
    """
    try:
        segmenter = Segmenter(artifact, threads=None, ood=False)  # calibrated here, from these logits
        logits, ood = _run_and_calibrate(segmenter, images)
    except (ValueError, RuntimeError, OSError, ImportError) as err:
        return {"kind": _kind(fmt), "passed": False, "failures": ["artifact did not run"], "error": str(err)[:500]}
    result = {"kind": _kind(fmt), "images": len(images), "backend": segmenter.runner.backend}
    result.update(_logit_errors(reference_logits, logits))
    result.update(_iou_deltas(reference_logits, logits, masks, data_cfg, tolerances))
    failures = _float_failures(fmt, result, reference_logits, tolerances) if fmt.is_float else _iou_failures(result, tolerances)
    result["limits"] = _limits(fmt, tolerances, reference_logits)
    result["failures"] = failures
    result["passed"] = not failures
    result["ood"] = ood
    return _json_safe(result)


def _run_and_calibrate(segmenter: Segmenter, images: np.ndarray) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The artifact's logits for every image, and its OOD monitor calibrated on them (no extra runs)."""
    s = segmenter.sidecar
    collector = OodCollector(s.mean, s.std, s.pixel_scale)
    logits = []
    for image in images:
        x = segmenter.preprocess(image)
        logits.append(segmenter.runner.run(x)[0])  # what predict_logits does
        collector.add(x, logits[-1])
    monitor = collector.finish()
    if monitor is None:
        logger.warning("no OOD monitor for %s: %d check images, at least 8 needed", segmenter.path.name, len(images))
    return np.stack(logits), None if monitor is None else monitor.to_dict()


def _kind(fmt: ExportFormat) -> str:
    return "logits" if fmt.is_float else "iou"


def _logit_errors(reference: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    error = np.abs(reference.astype(np.float64) - logits)
    return {
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "max_abs_reference": float(np.abs(reference).max()),
        "argmax_agreement": float((reference.argmax(-1) == logits.argmax(-1)).mean()),
    }


def _iou_deltas(
    reference: np.ndarray, logits: np.ndarray, masks: np.ndarray | None, data_cfg: DataConfig, tol: Tolerances
) -> dict[str, Any]:
    truth = reference.argmax(-1) if masks is None else masks
    per_image = {
        who: _per_image_confusion(truth, source.argmax(-1), data_cfg.num_classes, data_cfg.ignore_index)
        for who, source in (("keras", reference), ("artifact", logits))
    }
    scores = {}
    for who, matrices in per_image.items():
        confusion = StreamingConfusion(data_cfg.num_classes, data_cfg.ignore_index)
        confusion.add_matrix(matrices.sum(axis=0))
        scores[who] = confusion.result(list(data_cfg.classes), list(data_cfg.eval_class_ids), data_cfg.hazards)
    keras, art = scores["keras"], scores["artifact"]
    eval_ids = list(data_cfg.eval_class_ids)
    drops = _bootstrap_drops(per_image["keras"], per_image["artifact"], eval_ids, tol)
    names = list(data_cfg.classes)
    # Hazard rates are reported beside the IoU deltas, not judged: the recipe gate owns that floor.
    hazards = {"keras_hazards": keras["hazards"], "artifact_hazards": art["hazards"]} if data_cfg.hazards else {}
    return {
        **hazards,
        "truth": "keras_predictions" if masks is None else "masks",
        "eval_classes": [names[i] for i in eval_ids],
        "keras_miou": keras["miou"],
        "artifact_miou": art["miou"],
        "miou_delta": _delta(art["miou"], keras["miou"]),
        "per_class_iou_delta": {
            name: _delta(art["per_class_iou"][name], keras["per_class_iou"][name]) for name in names
        },
        "class_pixels": {name: int(n) for name, n in zip(names, per_image["keras"].sum(axis=(0, 2)))},
        "class_images": {name: int(n) for name, n in zip(names, (per_image["keras"].sum(axis=2) > 0).sum(axis=0))},
        "confidence": tol.confidence,
        "bootstrap_resamples": tol.bootstrap_resamples,
        "miou_drop_interval": drops["miou"],
        "class_iou_drop_interval": {names[i]: drops[i] for i in eval_ids},
    }


def _per_image_confusion(truth: np.ndarray, pred: np.ndarray, k: int, ignore: int | None) -> np.ndarray:
    """``(N, K, K)`` int64: one confusion matrix per image (rows truth, columns prediction)."""
    return np.stack([confusion_matrix(t, p, k, ignore) for t, p in zip(truth, pred)])


def _bootstrap_drops(
    keras: np.ndarray, artifact: np.ndarray, eval_ids: list[int], tol: Tolerances
) -> dict[Any, list[float] | None]:
    """Paired bootstrap over images: the ``confidence`` interval of the mIoU drop and of each eval
    class's IoU drop (Keras minus artifact), ``None`` where a class is never scored."""
    n = len(keras)
    counts = np.random.default_rng(0).multinomial(n, np.full(n, 1.0 / n), size=tol.bootstrap_resamples)
    iou = {who: _iou_rows(np.einsum("bn,nij->bij", counts, m, optimize=True)) for who, m in
           (("keras", keras.astype(np.float64)), ("artifact", artifact.astype(np.float64)))}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: a class absent from a resample
        miou = {who: np.nanmean(v[:, eval_ids], axis=1) for who, v in iou.items()}
        drops: dict[Any, list[float] | None] = {"miou": _interval(miou["keras"] - miou["artifact"], tol.confidence)}
        for i in eval_ids:
            drops[i] = _interval(iou["keras"][:, i] - iou["artifact"][:, i], tol.confidence)
    return drops


def _iou_rows(matrices: np.ndarray) -> np.ndarray:
    """``(B, K)`` IoU of ``(B, K, K)`` confusion matrices; NaN where a class is absent."""
    tp = np.diagonal(matrices, axis1=1, axis2=2)
    union = matrices.sum(axis=1) + matrices.sum(axis=2) - tp
    out = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=out, where=union > 0)
    return out


def _interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return [float(low), float(high)]


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else float(value - reference)


def _limits(fmt: ExportFormat, tol: Tolerances, reference: np.ndarray) -> dict[str, float]:
    if not fmt.is_float:
        return {"max_miou_drop": tol.max_miou_drop, "max_class_iou_drop": tol.max_class_iou_drop,
                "confidence": tol.confidence}
    atol, rtol = (tol.float16_atol, tol.float16_rtol) if fmt.precision == "float16" else (tol.float32_atol, tol.float32_rtol)
    return {
        "max_abs_error": atol + rtol * float(np.abs(reference).max()),
        "min_argmax_agreement": tol.min_argmax_agreement,
    }


def _float_failures(fmt: ExportFormat, result: dict[str, Any], reference: np.ndarray, tol: Tolerances) -> list[str]:
    limits = _limits(fmt, tol, reference)
    failures = []
    # `not <=` so that a NaN error (a broken kernel) fails instead of slipping through.
    if not result["max_abs_error"] <= limits["max_abs_error"]:
        failures.append(f"max abs logit error {result['max_abs_error']:.3g} > {limits['max_abs_error']:.3g}")
    if not result["argmax_agreement"] >= limits["min_argmax_agreement"]:
        failures.append(f"argmax agreement {result['argmax_agreement']:.4f} < {limits['min_argmax_agreement']}")
    return failures


def _iou_failures(result: dict[str, Any], tol: Tolerances) -> list[str]:
    """A drop fails when its whole interval is above the tolerance; straddling it is only logged."""
    failures, unsure = [], []
    checks = [("mIoU", result["miou_delta"], result["miou_drop_interval"], tol.max_miou_drop, result["images"])]
    checks += [(f"IoU of {name!r}", result["per_class_iou_delta"][name], result["class_iou_drop_interval"][name],
                tol.max_class_iou_drop, result["class_images"][name]) for name in result["eval_classes"]]
    for what, delta, interval, limit, images in checks:
        if delta is None:
            continue
        if not math.isfinite(delta):  # a broken kernel: never let NaN slip through
            failures.append(f"{what} is not finite")
            continue
        low, high = interval if interval is not None else (-delta, -delta)
        text = f"{what} drop {-delta:.4f} ({tol.confidence:.0%} interval {low:.4f}..{high:.4f}, {images} images)"
        if images < tol.min_class_images:
            if -delta > limit:
                unsure.append(f"{text} > {limit}, too few images to judge")
        elif low > limit:
            failures.append(f"{text} > {limit}")
        elif high > limit:
            unsure.append(f"{text} may exceed {limit}")
    if unsure:
        logger.warning("self-check inconclusive on %d images (check more images to decide): %s",
                       result.get("images", 0), "; ".join(unsure))
    result["inconclusive"] = unsure
    return failures


def _json_safe(value: Any) -> Any:
    """Replace NaN/Inf floats with None, recursively: the sidecar must stay strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
