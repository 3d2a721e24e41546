"""Score an artifact on images with masks: per-class IoU, mIoU, confusion matrix, timing.

Two entry points share one scorer. The workstation passes arrays it loaded with
``roverlite.data.loader`` (which needs Pillow); a robot reads a test pack, an ``.npz`` holding
``images`` (N, H, W[, C]) uint8, ``masks`` (N, H, W) uint8 and ``ids`` (N,) strings, loaded with
``allow_pickle=False`` so a pack can never run code. Metrics come from
``roverlite.core.metrics.StreamingConfusion`` (numpy-only), the same code that scores training.
Every result also says how the artifact's out-of-distribution monitor saw the images
(:func:`ood_summary`): the share flagged and the score's distribution, or that it is off.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.segmenter import Segmenter
from roverlite.core.metrics import StreamingConfusion
from roverlite.io import atomic_write

__all__ = [
    "TestPack", "describe_ood", "evaluate_artifact", "evaluate_testpack", "load_testpack", "ood_summary", "save_testpack",
]

logger = logging.getLogger(__name__)

# Largest test pack read: its arrays' sizes are read from their headers first, so a small archive
# of compressed zeros cannot make a robot allocate gigabytes (a bundle holds at most 1 GiB anyway).
MAX_TESTPACK_BYTES = 1 << 30


@dataclass(frozen=True)
class TestPack:
    """Images with their masks and ids, as stored in a test pack ``.npz``."""

    __test__ = False  # not a pytest class, despite the name

    images: np.ndarray
    masks: np.ndarray
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_arrays(self.images, self.masks, "test pack")
        if len(self.ids) != len(self.images):
            raise ValueError(f"Expected one id per image ({len(self.images)}). Received: {len(self.ids)} ids.")

    def __len__(self) -> int:
        return len(self.ids)


def evaluate_artifact(
    artifact: str | os.PathLike | Segmenter,
    images: np.ndarray | Sequence[np.ndarray],
    masks: np.ndarray | Sequence[np.ndarray],
    threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run ``artifact`` on every image and score its masks against ``masks``.

    Args:
        artifact: a ``.tflite`` / ``.onnx`` path (verified against its sidecar) or a ``Segmenter``.
        images: uint8 images, any size (each is resized to the model and its mask back).
        masks: uint8 label masks, one per image, each of its image's height x width.
        threads, providers: passed to :class:`Segmenter` when ``artifact`` is a path.

    Returns:
        ``{"miou", "per_class_iou", "pixel_accuracy", "confusion_matrix", "images", "artifact",
        "format", "runtime", "backend", "sha256", "ms_per_image", "ood"}``, plus ``hazards`` (miss and
        false-hazard rate per hazard class, ``roverlite.core.metrics.hazard_summary``) when the
        sidecar declares them; mIoU is averaged over the sidecar's ``eval_class_ids``, and
        ignore-labelled pixels are left out. ``ood`` is :func:`ood_summary` of the images.

    Raises:
        ValueError: counts or sizes of images and masks differ, or a bad image (see ``Segmenter``).
    """
    segmenter = artifact if isinstance(artifact, Segmenter) else Segmenter(artifact, threads, providers)
    _check_arrays(images, masks, "evaluation data")
    s = segmenter.sidecar
    confusion = StreamingConfusion(s.num_classes, s.ignore_index)
    seconds = 0.0
    verdicts = []
    for image, mask in zip(images, masks):
        start = time.perf_counter()
        prediction = segmenter.predict(image)
        seconds += time.perf_counter() - start
        verdicts.append(segmenter.last_ood)
        confusion.update(mask, prediction)
    result = confusion.result(list(s.classes), list(s.eval_class_ids), s.hazards)
    result.update(
        images=len(images),
        artifact=str(segmenter.path),
        format=s.format,
        runtime=s.runtime,
        backend=segmenter.runner.backend,
        sha256=s.sha256,
        ms_per_image=1000.0 * seconds / max(len(images), 1),
        ood=ood_summary(segmenter, verdicts),
    )
    return result


def ood_summary(segmenter: Segmenter, verdicts: Sequence[Any]) -> dict[str, Any]:
    """How the OOD monitor saw a set of frames (``verdicts``: ``segmenter.last_ood`` after each).

    Returns:
        ``{"enabled": False, "status"}`` when the monitor is off; else ``enabled``, ``status``,
        ``images``, ``flag_rate`` (share flagged at the monitor's own threshold), ``threshold``,
        ``flag_rates`` (the share above each calibrated threshold, keyed by its false-alarm rate on
        the calibration frames), ``score`` (mean and p50/p90/p99/max of the finite scores),
        ``non_finite_scores`` and ``flagged_by_feature``.
    """
    monitor = segmenter.ood_monitor
    if monitor is None or not verdicts or any(v is None for v in verdicts):
        return {"enabled": False, "status": segmenter.ood_status}
    scores = np.asarray([v.score for v in verdicts], np.float64)
    finite = scores[np.isfinite(scores)]
    by_feature: dict[str, int] = {}
    for verdict in verdicts:
        if verdict.flagged:
            by_feature[verdict.feature] = by_feature.get(verdict.feature, 0) + 1
    distribution = {}
    if finite.size:
        distribution["mean"] = float(finite.mean())
        distribution.update({f"p{q}": float(v) for q, v in zip((50, 90, 99), np.percentile(finite, (50, 90, 99)))})
        distribution["max"] = float(finite.max())
    return {
        "enabled": True,
        "status": segmenter.ood_status,
        "images": len(verdicts),
        "flag_rate": float(np.mean([v.flagged for v in verdicts])),
        "threshold": monitor.threshold,
        "flag_rates": {f"{rate:g}": float(flags.mean()) for rate, flags in monitor.flags(scores).items()},
        "score": distribution,
        "non_finite_scores": int(scores.size - finite.size),
        "flagged_by_feature": dict(sorted(by_feature.items(), key=lambda kv: -kv[1])),
    }


def describe_ood(summary: dict[str, Any] | None) -> str:
    """One line for a person: the OOD monitor's flag rate and score distribution, or why it is off."""
    if not summary or not summary.get("enabled"):
        return f"OOD monitor {summary['status'] if summary else 'off'}"
    score = summary["score"]
    nan = float("nan")
    rates = ", ".join(f"{v:.1%} above its {float(k):.0%} threshold" for k, v in summary["flag_rates"].items())
    features = ", ".join(f"{name} {count}" for name, count in summary["flagged_by_feature"].items()) or "none"
    return (
        f"OOD monitor: {summary['flag_rate']:.1%} of {summary['images']} images flagged ({rates}); score p50 "
        f"{score.get('p50', nan):.2f}, p99 {score.get('p99', nan):.2f}, max {score.get('max', nan):.2f} "
        f"(threshold {summary['threshold']:.2f}); flagged by: {features}"
    )


def evaluate_testpack(
    artifact: str | os.PathLike | Segmenter,
    testpack: str | os.PathLike,
    threads: int | None = None,
    providers: Sequence[str] | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_artifact` on a test pack ``.npz`` (see :func:`load_testpack`)."""
    pack = load_testpack(testpack)
    result = evaluate_artifact(artifact, pack.images, pack.masks, threads, providers)
    result["testpack"] = str(testpack)
    return result


def load_testpack(path: str | os.PathLike) -> TestPack:
    """Read a test pack ``.npz`` without unpickling anything.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an ``.npz``, pickled objects inside, or missing / inconsistent arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Test pack not found. Expected an .npz file. Received: {str(path)!r}.")
    declared = _declared_bytes(path)
    if declared > MAX_TESTPACK_BYTES:
        raise ValueError(
            f"Test pack {str(path)!r} is too large. Expected arrays of at most {MAX_TESTPACK_BYTES} bytes in all. "
            f"Received: {declared} bytes in its array headers."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as err:
        raise ValueError(
            f"Test pack {str(path)!r} holds pickled objects or is damaged. Expected plain arrays "
            f"(allow_pickle=False). Received: {str(err)[:200]}."
        ) from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"Cannot read test pack {str(path)!r}. Expected an .npz file. Received: {err}.") from None
    missing = [key for key in ("images", "masks") if key not in arrays]
    if missing:
        raise ValueError(
            f"Test pack {str(path)!r} is incomplete. Expected arrays 'images' and 'masks' (and 'ids'). "
            f"Received: {sorted(arrays)}."
        )
    images, masks = arrays["images"], arrays["masks"]
    ids = arrays.get("ids")
    if ids is None:
        ids = np.asarray([str(i) for i in range(len(images))])
    if ids.dtype.kind != "U" or ids.ndim != 1:
        raise ValueError(f"Test pack {str(path)!r}: expected 'ids' as a 1-D string array. Received: {ids.dtype} {ids.shape}.")
    return TestPack(images=images, masks=masks, ids=tuple(str(i) for i in ids))


def _declared_bytes(path: Path) -> int:
    """Bytes the ``.npy`` members of an ``.npz`` say they hold, read from their headers only.

    0 for anything that is not such an archive: ``np.load`` then reports what is wrong with it.
    """
    total = 0
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = (
                        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(fh, max_header_size=10_000)
                total += int(np.prod(shape, dtype=object)) * dtype.itemsize
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, TypeError):
        return 0
    return total


def save_testpack(
    path: str | os.PathLike, images: np.ndarray, masks: np.ndarray, ids: Sequence[str] | None = None
) -> Path:
    """Write a test pack ``.npz`` atomically (compressed; strings stored as a unicode array)."""
    ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
    pack = TestPack(images=np.asarray(images), masks=np.asarray(masks), ids=tuple(ids))
    return atomic_write(
        path, lambda fh: np.savez_compressed(fh, images=pack.images, masks=pack.masks, ids=np.asarray(pack.ids, dtype=str))
    )


def _check_arrays(images: Any, masks: Any, what: str) -> None:
    if len(images) != len(masks):
        raise ValueError(f"Expected one mask per image in the {what}. Received: {len(images)} images, {len(masks)} masks.")
    if len(images) == 0:
        raise ValueError(f"Expected at least one image in the {what}. Received: none.")
    for k, (image, mask) in enumerate(zip(images, masks)):
        image, mask = np.asarray(image), np.asarray(mask)
        if mask.ndim != 2 or image.ndim not in (2, 3) or image.shape[:2] != mask.shape:
            raise ValueError(
                f"Image {k} of the {what} does not fit its mask. Expected an (H, W[, C]) image and an (H, W) mask "
                f"of the same size. Received: image {image.shape}, mask {mask.shape}."
            )
        if mask.dtype.kind not in "iu":
            raise ValueError(f"Expected integer masks in the {what}. Received: mask {k} of dtype {mask.dtype}.")
