"""Every export checks itself: the artifact, run through ``roverlite.deploy``, against the Keras model.

Float formats (float32, float16) must reproduce the Keras logits: the check reports the max and
mean absolute logit error and the argmax agreement, and passes when the max error is within
``atol + rtol * max|keras logit|`` and agreement is high. Quantized formats (dynamic range, int8)
are judged by what matters on the robot, per-class IoU: the artifact's IoU against the truth
masks minus the Keras model's IoU against the same masks. Without masks the Keras predictions
serve as truth (Keras IoU is then 1 for every present class, so the delta is the agreement lost).

The artifact is run exactly as a device runs it: :class:`roverlite.deploy.Segmenter` verifies the
sidecar hash, normalises and quantizes per the sidecar, and dequantizes the output.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from roverlite.config import DataConfig
from roverlite.deploy.segmenter import Segmenter
from roverlite.export.formats import ExportFormat
from roverlite.train.metrics import StreamingConfusion

__all__ = ["Tolerances", "keras_logits", "self_check"]

logger = logging.getLogger(__name__)


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
    """

    float32_atol: float = 1e-4
    float32_rtol: float = 1e-4
    float16_atol: float = 1e-2
    float16_rtol: float = 1e-2
    min_argmax_agreement: float = 0.99
    max_miou_drop: float = 0.03
    max_class_iou_drop: float = 0.10

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"Expected tolerance {key} to be a finite number >= 0. Received: {value!r}.")
        if self.min_argmax_agreement > 1:
            raise ValueError(
                f"Expected min_argmax_agreement in [0, 1]. Received: {self.min_argmax_agreement}."
            )


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
        A JSON-ready dict with ``passed`` (bool), ``failures`` (reasons) and the measurements;
        ``error`` instead of measurements when the artifact could not run at all.
    """
    try:
        segmenter = Segmenter(artifact, threads=None)
        logits = np.stack([segmenter.predict_logits(image) for image in images])
    except (ValueError, RuntimeError, OSError, ImportError) as err:
        return {"kind": _kind(fmt), "passed": False, "failures": ["artifact did not run"], "error": str(err)[:500]}
    result = {"kind": _kind(fmt), "images": len(images), "backend": segmenter.runner.backend}
    result.update(_logit_errors(reference_logits, logits))
    result.update(_iou_deltas(reference_logits, logits, masks, data_cfg))
    failures = _float_failures(fmt, result, reference_logits, tolerances) if fmt.is_float else _iou_failures(result, tolerances)
    result["limits"] = _limits(fmt, tolerances, reference_logits)
    result["failures"] = failures
    result["passed"] = not failures
    return _json_safe(result)


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
    reference: np.ndarray, logits: np.ndarray, masks: np.ndarray | None, data_cfg: DataConfig
) -> dict[str, Any]:
    truth = reference.argmax(-1) if masks is None else masks
    scores = {}
    for who, source in (("keras", reference), ("artifact", logits)):
        confusion = StreamingConfusion(data_cfg.num_classes, data_cfg.ignore_index)
        confusion.update(truth, source.argmax(-1))
        scores[who] = confusion.result(list(data_cfg.classes), list(data_cfg.eval_class_ids))
    keras, art = scores["keras"], scores["artifact"]
    return {
        "truth": "keras_predictions" if masks is None else "masks",
        "eval_classes": [data_cfg.classes[i] for i in data_cfg.eval_class_ids],
        "keras_miou": keras["miou"],
        "artifact_miou": art["miou"],
        "miou_delta": _delta(art["miou"], keras["miou"]),
        "per_class_iou_delta": {
            name: _delta(art["per_class_iou"][name], keras["per_class_iou"][name]) for name in data_cfg.classes
        },
    }


def _delta(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else float(value - reference)


def _limits(fmt: ExportFormat, tol: Tolerances, reference: np.ndarray) -> dict[str, float]:
    if not fmt.is_float:
        return {"max_miou_drop": tol.max_miou_drop, "max_class_iou_drop": tol.max_class_iou_drop}
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
    failures = []
    delta = result["miou_delta"]
    if delta is not None and -delta > tol.max_miou_drop:
        failures.append(f"mIoU drop {-delta:.4f} > {tol.max_miou_drop}")
    for name in result["eval_classes"]:
        class_delta = result["per_class_iou_delta"][name]
        if class_delta is not None and -class_delta > tol.max_class_iou_drop:
            failures.append(f"IoU drop of {name!r} {-class_delta:.4f} > {tol.max_class_iou_drop}")
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
