"""How well the on-device OOD monitor tells validation frames from faulty or foreign ones, and what it costs.

    python benchmarks/ood.py                                   # built-in synthetic demo: trains a tiny teacher
    python benchmarks/ood.py --artifact teacher_tflite_int8.tflite --data ../shared/datasets/ai4mars-msl \\
        --foreign ../shared/datasets/cwfid --cost-artifact student_tflite_int8.tflite --out results/ood_ai4mars.json

The validation frames (the first ``--images`` of ``--split``) are dealt, seeded, into two halves:
the monitor is calibrated on the first half exactly as the export does (``OodCollector`` on the
artifact's own logits), so an artifact exported before the sidecar's ``ood`` field existed is
evaluated too, and the held-out half is scored clean and under each corruption:

* ``blur_mild`` / ``blur_strong``: Gaussian blur, radius 1 / 3 px at the model's size;
* ``noise_mild`` / ``noise_strong``: additive Gaussian noise, sigma 8 / 30 levels;
* ``saturation``: exposure x3, clipped (an over-exposed frame); ``dark``: exposure x0.15;
* ``black``: all-zero frames (a dead or covered camera);
* ``patches``: four gray squares over ~20 % of the frame (dust, mud, a lens occluder);
* ``alien_noise``: uniform noise frames (like the AN2DL course set's 110 "alien" images, noise
  frames sharing one mask); ``alien_overlay``: one fixed blob of noise pasted on every frame;
* ``foreign``: ``--foreign`` frames (CWFID crop/weed RGB photos, converted to the model's channels
  with Pillow's luma and resized as the device does) given to the Mars model.

For each: AUROC of the score (held-out clean frames = negatives; a non-finite score ranks above
all), and the share flagged at the 1 % and 5 % thresholds (clean frames: the false-alarm rate on
frames the calibration never saw). Cost: ``Segmenter.predict`` with and without the monitor,
interleaved frame by frame, on ``--cost-artifact`` (default: the artifact), p50 of each and the
monitor alone. Writes one JSON with the command and the host.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from roverlite.deploy.hostinfo import host_info
from roverlite.deploy.ood import OodCollector, OodMonitor
from roverlite.deploy.segmenter import Segmenter
from roverlite.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
GROSS = ("black", "saturation", "dark", "noise_strong", "alien_noise")
logger = logging.getLogger("benchmarks.ood")


# === Corruptions (uint8 (H, W, C) at the model's size in, same out) ===


def _blur(radius: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from PIL import Image, ImageFilter

        planes = [np.asarray(Image.fromarray(image[..., c]).filter(ImageFilter.GaussianBlur(radius)))
                  for c in range(image.shape[-1])]
        return np.stack(planes, axis=-1)

    return apply


def _noise(sigma: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    def apply(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)

    return apply


def _gain(factor: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    return lambda image, rng: np.clip(image.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def _patches(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    h, w = image.shape[:2]
    side = int(round(np.sqrt(0.05 * h * w)))  # four squares of 5 % each
    for _ in range(4):
        top, left = rng.integers(0, h - side), rng.integers(0, w - side)
        out[top : top + side, left : left + side] = rng.integers(90, 170)
    return out


def _alien_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, image.shape, dtype=np.uint8)


def _alien_overlay(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    blob = ((yy - 0.55 * h) / (0.22 * h)) ** 2 + ((xx - 0.45 * w) / (0.16 * w)) ** 2 <= 1.0  # one shared mask
    out = image.copy()
    out[blob] = rng.integers(0, 256, (int(blob.sum()), image.shape[-1]), dtype=np.uint8)
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "blur_mild": _blur(1.0),
    "blur_strong": _blur(3.0),
    "noise_mild": _noise(8.0),
    "noise_strong": _noise(30.0),
    "saturation": _gain(3.0),
    "dark": _gain(0.15),
    "black": lambda image, rng: np.zeros_like(image),
    "patches": _patches,
    "alien_noise": _alien_noise,
    "alien_overlay": _alien_overlay,
}


# === Scoring ===


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties half; non-finite scores rank above all."""
    neg = np.where(np.isfinite(negatives), negatives, np.inf)
    pos = np.where(np.isfinite(positives), positives, np.inf)
    ranks = _ranks(np.concatenate([neg, pos]))
    rank_sum = ranks[len(neg):].sum()
    return float((rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_values[j + 1] == sorted_values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def calibrate(seg: Segmenter, images: np.ndarray) -> OodMonitor:
    """The monitor the export would store, calibrated on ``images`` with the artifact's own logits."""
    s = seg.sidecar
    collector = OodCollector(s.mean, s.std, s.pixel_scale)
    for image in images:
        x = seg.preprocess(image)
        collector.add(x, seg.runner.run(x)[0])
    monitor = collector.finish()
    if monitor is None:
        raise ValueError(f"Expected at least 8 calibration images. Received: {len(images)}.")
    return monitor


def scores_of(seg: Segmenter, images: Any) -> tuple[np.ndarray, list[str]]:
    scores, features = [], []
    for image in images:
        seg.predict(image)
        scores.append(seg.last_ood.score)
        features.append(seg.last_ood.feature)
    return np.asarray(scores, np.float64), features


def row(monitor: OodMonitor, clean: np.ndarray, scores: np.ndarray, features: list[str]) -> dict[str, Any]:
    flags = monitor.flags(scores)
    top = max(set(features), key=features.count) if features else None
    finite = scores[np.isfinite(scores)]
    return {
        "frames": len(scores),
        "auroc": round(auroc(clean, scores), 4),
        "flagged_at_1pct": round(float(flags[0.01].mean()), 4),
        "flagged_at_5pct": round(float(flags[0.05].mean()), 4),
        "score_p50": round(float(np.median(finite)), 3) if finite.size else None,
        "top_feature": top,
    }


# === Cost ===


def cost(seg: Segmenter, images: np.ndarray, rounds: int) -> dict[str, Any]:
    """p50 of predict with and without the monitor, interleaved frame by frame, and the monitor alone."""
    monitor = seg.ood_monitor
    on, off, alone = [], [], []
    for k in range(rounds):
        image = images[k % len(images)]
        for enabled in ((True, False) if k % 2 else (False, True)):
            seg.ood_monitor = monitor if enabled else None
            start = time.perf_counter()
            seg.predict(image)
            (on if enabled else off).append(time.perf_counter() - start)
        x = seg.preprocess(image)
        logits = seg.runner.run(x)[0]
        start = time.perf_counter()
        monitor.score(x, logits)
        alone.append(time.perf_counter() - start)
    seg.ood_monitor = monitor
    p50 = {name: 1000.0 * float(np.median(v[len(v) // 10:])) for name, v in (("on", on), ("off", off), ("alone", alone))}
    return {
        "artifact": str(seg.path),
        "frames": rounds,
        "predict_p50_ms_without_monitor": round(p50["off"], 4),
        "predict_p50_ms_with_monitor": round(p50["on"], 4),
        "monitor_alone_p50_ms": round(p50["alone"], 4),
        "added_share_of_p50": round(p50["alone"] / p50["off"], 4),
        "added_share_measured_by_difference": round(p50["on"] / p50["off"] - 1.0, 4),
        "backend": seg.runner.backend,
    }


# === Data ===


def load_frames(artifact: Path, data: str, split: str, count: int) -> np.ndarray:
    """uint8 ``(N, H, W, C)`` frames of ``split`` at the artifact's size, read as training read them."""
    from roverlite.config import Config
    from roverlite.data.loader import load_split
    from roverlite.deploy.sidecar import read_sidecar

    s = read_sidecar(artifact)
    raw = {"data": {
        "format": "synthetic" if data == "synthetic" else "folder",
        "path": None if data == "synthetic" else str(Path(data).resolve()),
        "classes": list(s.classes), "colors": [list(c) for c in s.class_colors], "ignore_index": s.ignore_index,
        "image_size": list(s.input.shape[1:3]), "color_mode": s.color_mode, "mean": list(s.mean), "std": list(s.std),
        "max_images": count,
        **({"synthetic_count": 4 * count} if data == "synthetic" else {}),  # a val split (30 %) above count
    }}
    return load_split(Config.from_dict(raw).data, split).images


def camera_frames(images: np.ndarray) -> np.ndarray:
    """The frames at 480x640, as a camera delivers them (the device resizes them to the model)."""
    from roverlite.deploy.resize import resize_bilinear

    return np.stack([resize_bilinear(image, (480, 640)) for image in images])


def load_foreign(folder: str, size: tuple[int, int], channels: int, count: int) -> list[np.ndarray]:
    """Photos from another dataset, as a device would feed them: luma for a gray model, resized to the model."""
    from PIL import Image

    files = sorted(p for p in Path(folder, "images").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[:count]
    frames = []
    for path in files:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB").resize(size[::-1], Image.BILINEAR)
            pixels = np.asarray(im)
        frames.append(pixels[..., None] if pixels.ndim == 2 else pixels)
    return frames


def tiny_synthetic_teacher(folder: Path) -> Path:
    """A tiny U-Net trained for a minute on the built-in synthetic terrain, exported as int8 TFLite."""
    from roverlite._tf import keras
    from roverlite.config import Config
    from roverlite.data.loader import load_split, normalize
    from roverlite.export import ExportSettings, export_model
    from roverlite.train.models import create_model

    data_cfg = Config.from_dict({"data": {"format": "synthetic", "image_size": [128, 128]}}).data
    train, val = load_split(data_cfg, "train"), load_split(data_cfg, "val")
    keras.utils.set_random_seed(0)
    model = create_model("unet_tiny", input_shape=(128, 128, 1), num_classes=data_cfg.num_classes)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masks = np.where(train.masks == 255, 0, train.masks)
    model.fit(normalize(train.images, data_cfg.mean, data_cfg.std), masks, batch_size=16, epochs=8, verbose=0)
    result = export_model(model, ExportSettings(["tflite_int8"], folder, data_cfg, calibration_images=train.images,
                                                check_images=val.images, check_masks=val.masks,
                                                name="ood_tiny_teacher"))[0]
    return result.path


# === Main ===


def run(args: argparse.Namespace) -> dict[str, Any]:
    artifact = Path(args.artifact)
    seg = Segmenter(artifact, threads=args.threads)
    frames = load_frames(artifact, args.data, args.split, args.images)
    order = np.random.default_rng(0).permutation(len(frames))
    half = len(frames) // 2
    calibration, held_out = frames[order[:half]], frames[order[half:]]
    had_sidecar_monitor = seg.ood_monitor is not None
    seg.ood_monitor = calibrate(seg, calibration)
    logger.info("calibrated on %d frames; scoring %d held-out frames clean and corrupted", len(calibration), len(held_out))
    clean, clean_features = scores_of(seg, held_out)
    rows = {"clean": row(seg.ood_monitor, clean, clean, clean_features)}
    for name, corrupt in CORRUPTIONS.items():
        rng = np.random.default_rng(1)
        rows[name] = row(seg.ood_monitor, clean, *scores_of(seg, (corrupt(image, rng) for image in held_out)))
        logger.info("%s: AUROC %.3f", name, rows[name]["auroc"])
    if args.foreign:
        foreign = load_foreign(args.foreign, seg.input_size, seg.channels, args.images)
        rows["foreign"] = {**row(seg.ood_monitor, clean, *scores_of(seg, foreign)), "data": str(args.foreign)}
    gross = {name: rows[name]["auroc"] for name in GROSS}
    cost_seg = seg if args.cost_artifact is None else Segmenter(args.cost_artifact, threads=args.threads)
    if cost_seg is not seg:
        cost_seg.ood_monitor = calibrate(cost_seg, calibration[: max(8, min(64, len(calibration)))])
    return {
        "artifact": str(artifact),
        "data": args.data,
        "split": args.split,
        "calibration_frames": len(calibration),
        "held_out_frames": len(held_out),
        "sidecar_had_monitor": had_sidecar_monitor,
        "monitor": {"thresholds": dict(zip(map(str, seg.ood_monitor.false_alarm_rates), seg.ood_monitor.thresholds)),
                    "features": list(seg.ood_monitor.features)},
        "results": rows,
        "gross_faults": {"target_auroc": 0.95, "auroc": gross, "all_meet_target": all(v >= 0.95 for v in gross.values())},
        "cost": cost(cost_seg, held_out, args.cost_frames),
        "cost_camera_frames": {**cost(cost_seg, camera_frames(held_out[:32]), args.cost_frames), "frame": "480x640"},
        "host": host_info(),
        "command": "python " + shlex.join(sys.argv),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", help="a .tflite/.onnx with its sidecar (default: train a tiny synthetic teacher)")
    parser.add_argument("--data", default="synthetic", help="dataset folder of the artifact's task, or 'synthetic'")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=400, help="frames of the split: half calibrate, half are scored")
    parser.add_argument("--foreign", help="a dataset folder (images/) of another task, e.g. ../shared/datasets/cwfid")
    parser.add_argument("--cost-artifact", help="the artifact whose p50 the monitor's cost is measured on")
    parser.add_argument("--cost-frames", type=int, default=400)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "ood_synthetic.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        if args.artifact is None:
            args.artifact = str(tiny_synthetic_teacher(Path(tmp)))
        result = run(args)
    atomic_write_json(args.out, result)
    for name, r in result["results"].items():
        print(f"{name:<14} AUROC {r['auroc']:.3f}  flagged@1% {r['flagged_at_1pct']:.3f}  @5% {r['flagged_at_5pct']:.3f}  "
              f"top {r['top_feature']}")
    for key in ("cost", "cost_camera_frames"):
        c = result[key]
        print(f"{key}: monitor {c['monitor_alone_p50_ms']:.3f} ms on a predict p50 of "
              f"{c['predict_p50_ms_without_monitor']:.3f} ms ({c['added_share_of_p50']:.1%}; by difference "
              f"{c['added_share_measured_by_difference']:.1%})")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
