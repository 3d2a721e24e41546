"""``Segmenter``: an image in, a class mask out, preprocessed exactly as in training.

The artifact's sidecar supplies everything: input size and channels, normalisation, quantization,
classes and colours. ``predict`` resizes the image to the model's size (Pillow's bilinear,
through the functions the training loader uses, :mod:`roverlite.deploy.resize`), normalises it,
runs the model, takes the argmax and resizes the mask back to the image's size (nearest).
Memory stays within a few times the frame's own size: a 12 MP RGB frame is never copied to
floats, only resized by Pillow in uint8.

Accepted images: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``, uint8 pixels, or any integer or float
array on the same 0..255 scale (floats must be finite and inside 0..255; a 0..1 float image is
not guessed at). Channel rule, as in the training loader:

* grayscale model, 3-channel image: accepted when its channels differ by at most the sidecar's
  ``gray_tolerance`` levels at every pixel (gray JPEGs decode as three equal channels), then
  converted with Pillow's luma; a colour image is refused.
* RGB model, 1-channel image: replicated to three channels only when the sidecar sets
  ``allow_gray_to_rgb``; refused otherwise (a colour model fed gray pixels is out of distribution).
* any other channel count (2, 4 = RGBA, ...): refused.

Every prediction is also scored by the artifact's out-of-distribution monitor when its sidecar
carries one (``ood``, calibrated at export; :mod:`roverlite.deploy.ood`), from the model input and
logits the prediction already computed: ``seg.last_ood`` holds the latest frame's
:class:`~roverlite.deploy.ood.OodResult` (score, flag, the feature behind it), ``None`` when the
monitor is off (an artifact exported before the field existed, or ``ood=False``).

Example:
    >>> seg = Segmenter("exports/unet_xs_tflite_int8.tflite", threads=2)  # doctest: +SKIP
    >>> mask = seg.predict(frame)                                   # (H, W) uint8 class ids
    >>> seg.last_ood                                                # doctest: +SKIP
    OodResult(score=1.7, flagged=False, feature='brightness')
    >>> Image.fromarray(seg.overlay(frame, mask)).save("overlay.png")
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from roverlite.core.preprocessing import Preprocessing
from roverlite.deploy.ood import OodMonitor, OodResult
from roverlite.deploy.resize import gray_to_rgb, resize_nearest, to_model_pixels
from roverlite.deploy.runtime import Runner, load_runner
from roverlite.deploy.sidecar import Sidecar, load_verified

__all__ = ["Segmenter", "overlay"]

logger = logging.getLogger(__name__)

# Pixels blended at a time by overlay(): a few MiB of float32, whatever the frame's size.
_OVERLAY_BLOCK_PIXELS = 1 << 18


class Segmenter:
    """Semantic segmentation with a verified artifact.

    Args:
        artifact_path: a ``.tflite`` or ``.onnx`` file with its ``<file>.json`` sidecar beside it.
        threads: CPU threads for the runtime (``None`` = runtime default).
        providers: ONNX Runtime providers in priority order (``None`` = TensorRT, CUDA, CPU as
            available).
        ood: score every frame with the sidecar's out-of-distribution monitor, when it has one.

    Attributes:
        ood_monitor: the :class:`~roverlite.deploy.ood.OodMonitor`, or ``None`` (monitor off).
        last_ood: the latest frame's :class:`~roverlite.deploy.ood.OodResult`, ``None`` when off.

    Raises:
        FileNotFoundError: artifact or sidecar missing.
        ValueError: invalid sidecar, sha256 mismatch, damaged model, or a model whose tensors do
            not match its sidecar.
    """

    def __init__(
        self,
        artifact_path: str | os.PathLike,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        ood: bool = True,
    ) -> None:
        self.path = Path(artifact_path)
        self.sidecar: Sidecar
        self.sidecar, content = load_verified(self.path)
        self.runner: Runner = load_runner(self.path, threads=threads, providers=providers, content=content)
        self._check_runner_matches_sidecar()
        s = self.sidecar
        self.preprocessing: Preprocessing = s.preprocessing
        self._palette = np.asarray(s.class_colors, dtype=np.uint8)
        self.ood_monitor: OodMonitor | None = OodMonitor.from_dict(s.ood) if ood and s.ood is not None else None
        self.last_ood: OodResult | None = None
        if self.ood_monitor is None:
            logger.info("%s: OOD monitor %s", self.path.name, self.ood_status)

    @property
    def ood_status(self) -> str:
        """One line: whether frames are scored for being out of distribution, and why not."""
        if self.ood_monitor is not None:
            m = self.ood_monitor
            return f"on: calibrated on {m.images} images, flags a score above {m.threshold:.2f} ({m.flag_rate:.0%} false alarms)"
        if self.sidecar.ood is None:
            return (
                "off: the sidecar has no 'ood' calibration (exported before the monitor existed, or with fewer "
                "than 8 check images); re-export to add it"
            )
        return "off: disabled (ood=False)"

    # === Properties ===

    @property
    def classes(self) -> tuple[str, ...]:
        return self.sidecar.classes

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's ``(height, width)``."""
        return self.sidecar.image_size

    @property
    def channels(self) -> int:
        return self.sidecar.channels

    # === Prediction ===

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """The normalised float32 ``(1, H, W, C)`` model input for one image.

        The training loader's path (:func:`~roverlite.deploy.resize.to_model_pixels`, then
        :meth:`Preprocessing.normalize`): bit-identical input for the same image.
        """
        pixels = _as_pixels(image)
        self._check_channels(pixels)
        return self.preprocessing.normalize(to_model_pixels(pixels, self.preprocessing))[None]

    def predict_logits(self, image: np.ndarray) -> np.ndarray:
        """Float32 logits ``(H_model, W_model, K)`` for one image (dequantized for int8 models); sets ``last_ood``."""
        x = self.preprocess(image)
        logits = self.runner.run(x)[0]
        self.check_frame(x, logits)
        return logits

    def check_frame(self, x: np.ndarray, logits: np.ndarray) -> OodResult | None:
        """Score a frame already run (``x`` from :meth:`preprocess`, its logits); sets and returns ``last_ood``.

        For loops that call :meth:`preprocess` and the runner themselves; ``predict`` calls it.
        """
        self.last_ood = None if self.ood_monitor is None else self.ood_monitor.score(x, logits)
        return self.last_ood

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The uint8 class-id mask ``(H, W)`` of one image, at the image's own size; sets ``last_ood``.

        Raises:
            ValueError: not an image, NaN/Inf or values outside 0..255, or channels the sidecar
                does not allow.
        """
        pixels = _as_pixels(image)
        mask = np.argmax(self.predict_logits(pixels), axis=-1).astype(np.uint8)
        if mask.shape != pixels.shape[:2]:
            mask = resize_nearest(mask, pixels.shape[:2])
        return mask

    def predict_batch(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Masks for many images: an ``(N, H, W)`` array for an array input, a list for a list."""
        if isinstance(images, np.ndarray):
            if images.ndim not in (3, 4):
                raise ValueError(f"Expected images as (N, H, W) or (N, H, W, C). Received: shape={images.shape}.")
            return np.stack([self.predict(image) for image in images]) if len(images) else np.zeros((0,) + images.shape[1:3], np.uint8)
        return [self.predict(image) for image in images]

    def overlay(self, image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """Blend the class colours of ``mask`` over ``image`` (see :func:`overlay`)."""
        return overlay(image, mask, self.sidecar.class_colors, alpha)

    # === Checks ===

    def _check_channels(self, pixels: np.ndarray) -> None:
        """Refuse channels the sidecar does not allow (the training loader's rule)."""
        problem = self.preprocessing.channel_problem(pixels)
        if problem:
            raise ValueError(f"Wrong channels for {self.sidecar.color_mode} model {self.path.name!r}. {problem}.")

    def _check_runner_matches_sidecar(self) -> None:
        s, r = self.sidecar, self.runner
        problems = []
        if tuple(r.input.shape) != tuple(s.input.shape):
            problems.append(f"input shape {list(r.input.shape)} vs sidecar {list(s.input.shape)}")
        if tuple(r.output.shape) != tuple(s.output.shape):
            problems.append(f"output shape {list(r.output.shape)} vs sidecar {list(s.output.shape)}")
        if r.input.dtype != s.input.dtype:
            problems.append(f"input dtype {r.input.dtype} vs sidecar {s.input.dtype}")
        if problems:
            raise ValueError(
                f"Model {str(self.path)!r} does not match its sidecar. Expected the tensors the sidecar "
                f"describes. Received: {'; '.join(problems)}."
            )


def overlay(
    image: np.ndarray, mask: np.ndarray, colors: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """An RGB uint8 picture: ``image`` with each class's colour blended in at ``alpha``.

    Pixels whose id has no colour (e.g. the ignore label) keep the image's own pixel.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or image and mask sizes differ.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"Expected alpha in [0, 1]. Received: alpha={alpha}.")
    pixels = _as_pixels(image)
    mask = np.asarray(mask)
    if mask.shape != pixels.shape[:2]:
        raise ValueError(f"Expected a mask of the image's size {pixels.shape[:2]}. Received: shape={mask.shape}.")
    palette = np.asarray(colors, dtype=np.float32).reshape(-1, 3)
    out = np.empty((*pixels.shape[:2], 3), np.uint8)
    # Blended in blocks of rows: float copies of a whole 12 MP frame would take ten times its size.
    rows = max(1, _OVERLAY_BLOCK_PIXELS // pixels.shape[1])
    for top in range(0, pixels.shape[0], rows):
        block = pixels[top : top + rows]
        rgb = (block if block.shape[-1] == 3 else gray_to_rgb(block[..., :1])).astype(np.float32)
        ids = mask[top : top + rows].astype(np.int64)
        colored = (ids >= 0) & (ids < len(palette))
        rgb[colored] = (1.0 - alpha) * rgb[colored] + alpha * palette[ids[colored]]
        out[top : top + rows] = np.clip(np.rint(rgb), 0, 255)
    return out


def _as_pixels(image: np.ndarray) -> np.ndarray:
    """Validate one image and return it as (H, W, C) uint8 or float32 on the 0..255 scale."""
    if not isinstance(image, np.ndarray):
        image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1 or image.shape[2] not in (1, 3):
        raise ValueError(f"Expected an image of shape (H, W), (H, W, 1) or (H, W, 3). Received: shape={image.shape}.")
    if image.dtype == np.uint8:
        return image
    if image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise ValueError("Expected finite pixel values. Received: an image containing NaN or Inf.")
    elif image.dtype.kind not in "iu":
        raise ValueError(f"Expected uint8 pixels (or numbers on the 0..255 scale). Received: dtype={image.dtype}.")
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 255:
        raise ValueError(f"Expected pixel values in 0..255. Received: values in [{low:g}, {high:g}].")
    return image.astype(np.uint8) if image.dtype.kind in "iu" else image.astype(np.float32, copy=False)
