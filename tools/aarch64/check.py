"""The end-to-end ``--check`` (train a student, export, bundle, run on both machines, report) and ``--bundle``."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from aarch64.host import (
    CHECK_FORMATS, CORTEX_A72_PART, MAX_MIOU_ABS_DIFF, MIN_PIXEL_AGREEMENT, QEMU, QEMU_CPU, REPO, RESULTS_JSON,
    SCHEMA_VERSION, EmulationError, default_cache_dir, qemu_version, support_problem,
)
from aarch64.userland import Userland, ensure_userland, host_cpu_count, parse_requirements
from aarch64.qemu import ProbeOutput, probe_bundle, run_emulated
from aarch64.compare import compare_runs

logger = logging.getLogger("roverlite.tools.emulate_aarch64")


MODEL_NAME = "unet_xxs"
MODEL_SIZE = (64, 64)        # the student's input
TESTPACK_SIZE = (128, 128)   # test images are larger, so the device-side numpy resize runs too
TRAIN_IMAGES = 480
TESTPACK_IMAGES = 20
EPOCHS = 10


@dataclass(frozen=True)
class Student:
    """The trained student's artifacts and the data they were checked on."""

    artifacts: Mapping[str, Path]
    testpack: Any  # roverlite.data.loader.SegmentationArrays at TESTPACK_SIZE
    info: Mapping[str, Any]


def train_and_export(datasets: Path, out_dir: Path, formats: Sequence[str], seed: int = 0) -> Student:
    """Train ``unet_xxs`` briefly on AI4Mars at 64x64 and export it to ``formats``."""
    import dataclasses

    from roverlite.config import load_config
    from roverlite.data.loader import load_split, normalize
    from roverlite.export import ExportSettings, export_model

    cfg = load_config(REPO / "configs" / "mars.yaml").data
    base = dataclasses.replace(cfg, path=str(datasets), image_size=MODEL_SIZE)
    started = time.perf_counter()
    train = load_split(dataclasses.replace(base, max_images=TRAIN_IMAGES), "train")
    check = load_split(dataclasses.replace(base, max_images=TESTPACK_IMAGES), "val")
    testpack = load_split(dataclasses.replace(base, max_images=TESTPACK_IMAGES, image_size=TESTPACK_SIZE), "val")
    if check.ids != testpack.ids:
        raise EmulationError(f"Expected the same {TESTPACK_IMAGES} validation ids at both sizes. Received: different ids.")
    loaded = time.perf_counter()

    model = _fit(base, normalize(train.images, base.mean, base.std), train.masks, seed)
    fitted = time.perf_counter()
    results = export_model(model, ExportSettings(
        list(formats), out_dir, base, calibration_images=train.images[:100], check_images=check.images,
        check_masks=check.masks, name=f"{MODEL_NAME}_aarch64check", recipe={"tool": "tools/emulate_aarch64.py"},
    ))
    info = {
        "name": MODEL_NAME,
        "image_size": list(MODEL_SIZE),
        "train_images": len(train),
        "epochs": EPOCHS,
        "seed": seed,
        "export_self_check_passed": {r.format: r.passed for r in results},
        "seconds": {"load": round(loaded - started, 1), "fit": round(fitted - loaded, 1),
                    "export": round(time.perf_counter() - fitted, 1)},
    }
    return Student(artifacts={r.format: r.path for r in results}, testpack=testpack, info=info)


def _fit(data_cfg: Any, x: np.ndarray, masks: np.ndarray, seed: int) -> Any:
    from roverlite._tf import keras
    from roverlite.train.models import create_model

    keras.utils.set_random_seed(seed)
    model = create_model(MODEL_NAME, input_shape=(*MODEL_SIZE, data_cfg.channels), num_classes=data_cfg.num_classes)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # a few hundred steps: let the moving statistics settle
    valid = masks != data_cfg.ignore_index
    counts = np.bincount(masks[valid].ravel(), minlength=data_cfg.num_classes).astype(np.float64)
    class_weight = 1.0 / np.sqrt(np.maximum(counts / counts.sum(), 1e-4))  # inverse-sqrt frequency, as in training
    class_weight /= class_weight[counts > 0].mean()
    weights = np.where(valid, class_weight[np.where(valid, masks, 0)], 0.0).astype(np.float32)
    labels = np.where(valid, masks, 0)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, labels, sample_weight=weights, batch_size=16, epochs=EPOCHS, shuffle=True, verbose=0)
    return model


def constant_baseline_miou(masks: np.ndarray, num_classes: int, ignore_index: int | None, eval_ids: Sequence[int]) -> float:
    """The best mIoU a model predicting one class everywhere could reach on ``masks``.

    Predicting class ``c`` everywhere gives IoU ``share(c)`` for ``c`` and 0 for every other class
    present, so a model scoring above this has learned something from the pixels.
    """
    valid = masks != ignore_index if ignore_index is not None else np.ones(masks.shape, bool)
    counts = np.bincount(masks[valid].ravel(), minlength=num_classes)[:num_classes]
    shares = counts / max(counts.sum(), 1)
    return float(max(shares[c] for c in eval_ids) / len(eval_ids))


def run_check(
    datasets: Path, work_dir: Path, cache: Path | None = None, json_out: Path | None = RESULTS_JSON,
    formats: Sequence[str] = CHECK_FORMATS, threads: int = 1, repeat: int = 10, rebuild: bool = False,
    command: str = "python tools/emulate_aarch64.py --check", setup_s: float | None = None, cold: bool | None = None,
) -> dict[str, Any]:
    """Train, export, bundle; run every bundle on x86 and emulated aarch64; compare; write the JSON.

    ``setup_s`` and ``cold`` let the CLI report a ``--setup`` that ran just before (its time, and
    whether the cache was empty before it); by default the cache state at the call is reported.

    Raises:
        EmulationError: the host cannot emulate (see :func:`support_problem`) or a step failed.
    """
    from roverlite.deploy import make_bundle, unpack_bundle

    cache = default_cache_dir() if cache is None else cache
    problem = support_problem(cache)
    if problem:
        raise EmulationError(problem)
    timings: dict[str, float] = {} if setup_s is None else {"setup": setup_s}
    started = time.perf_counter()
    cold = not (cache / "root.json").is_file() if cold is None else cold

    student = train_and_export(datasets, work_dir / "exports", formats)
    timings["train_export"] = time.perf_counter() - started

    bundles = {}
    for fmt, artifact in student.artifacts.items():
        pack = student.testpack
        archive = make_bundle(artifact, work_dir / f"{artifact.stem}.tar.gz", pack.images, pack.masks, pack.ids)
        bundles[fmt] = archive
    requirements = parse_requirements(_member_text(next(iter(bundles.values())), "requirements-device.txt"))

    mark = time.perf_counter()
    userland = ensure_userland(cache, requirements, constraints=host_constraints(), rebuild=rebuild)
    timings["userland"] = time.perf_counter() - mark

    runs, probes = [], {}
    for fmt, archive in bundles.items():
        x86_dir = unpack_bundle(archive, work_dir / "x86" / fmt)
        arm_dir = unpack_bundle(archive, work_dir / "aarch64" / fmt)
        logger.info("%s: running the bundle on x86-64", fmt)
        reference = probe_bundle(x86_dir, work_dir / "out-x86" / fmt, threads, repeat)
        logger.info("%s: running the bundle under %s -cpu %s", fmt, QEMU, QEMU_CPU)
        emulated = probe_bundle(arm_dir, work_dir / "out-aarch64" / fmt, threads, repeat, userland=userland)
        probes[fmt] = reference
        entry = compare_runs(reference, emulated, pins=_pins(requirements))
        logger.info("%s: pixel agreement %.6f, mIoU %s vs %s", fmt, entry["pixel_agreement"], entry["miou_x86"],
                    entry["miou_emulated"])
        runs.append(entry)
    timings["runs"] = time.perf_counter() - mark - timings["userland"]
    timings["total"] = time.perf_counter() - started + (setup_s or 0.0)

    report = _report(student, probes, runs, userland, cache, cold, timings, command, threads, repeat)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        tmp = json_out.with_name(f".{json_out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, json_out)
        logger.info("wrote %s", json_out)
    return report


def _report(
    student: Student, probes: Mapping[str, ProbeOutput], runs: list[dict[str, Any]], userland: Userland, cache: Path,
    cold: bool, timings: Mapping[str, float], command: str, threads: int, repeat: int,
) -> dict[str, Any]:
    from roverlite.config import load_config

    cfg = load_config(REPO / "configs" / "mars.yaml").data
    pack = student.testpack
    baseline = constant_baseline_miou(pack.masks, cfg.num_classes, cfg.ignore_index, cfg.eval_class_ids)
    trained = {}
    for fmt, probe in probes.items():
        predicted = sorted(int(c) for c in np.unique(probe.masks))
        miou = probe.summary["miou"] or 0.0
        trained[fmt] = {"miou_x86": miou, "classes_predicted": predicted,
                        "non_trivial": miou > baseline and len(predicted) >= 2}
        if not trained[fmt]["non_trivial"]:
            for run in runs:
                if run["format"] == fmt:
                    run["failures"].append(f"the student's masks are trivial (mIoU {miou:.3f} <= constant {baseline:.3f})")
                    run["passed"] = False
    first = runs[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "what": "roverlite device bundles run on x86-64 and under qemu-user aarch64 emulation, masks and mIoU compared",
        "command": command,
        "command_fresh_machine": "python tools/emulate_aarch64.py --setup --check",
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "passed": all(run["passed"] for run in runs),
        # Top-level fields repeat runs[0], the LiteRT int8 run (the Raspberry Pi path).
        "runtime": first["runtime"],
        "format": first["format"],
        "pixel_agreement": first["pixel_agreement"],
        "miou_abs_diff": first["miou_abs_diff"],
        "wheels": dict(userland.wheels),
        "debs": dict(userland.debs),
        "thresholds": {"min_pixel_agreement": MIN_PIXEL_AGREEMENT, "max_miou_abs_diff": MAX_MIOU_ABS_DIFF},
        "emulator": {
            "qemu": qemu_version(),
            "cpu": QEMU_CPU,
            "cpuinfo": f"Cortex-A72 (part {CORTEX_A72_PART}) x {host_cpu_count()}, from the sysroot's proc/cpuinfo",
            "platform_tags": list(userland.platform_tags[:1]) + ["..."] + list(userland.platform_tags[-1:]),
            "timings_note": "latency_ms_emulated is qemu TCG time: recorded, never compared, no meaning for real silicon",
        },
        "host": {"machine": platform.machine(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "model": {**student.info, "constant_baseline_miou": baseline, "trained": trained},
        "testpack": {"dataset": "ai4mars-msl", "split": "val", "images": len(pack), "image_size": list(TESTPACK_SIZE),
                     "ids": list(pack.ids)},
        "settings": {"threads": threads, "repeat": repeat},
        "runs": runs,
        "cache": {"dir": tilde(cache), "cold": cold, "site": userland.site.name},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }


def tilde(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + "/") else text


def _pins(requirements: Sequence[str]) -> dict[str, str]:
    """``{"numpy": "2.4.6", ...}`` from requirement lines (unpinned ones left out)."""
    pairs = (line.split("==", 1) for line in requirements if "==" in line)
    return {name.strip().lower(): version.strip() for name, version in pairs}


def host_constraints() -> list[str]:
    """This host's versions of every installed distribution (pins transitive wheels to match)."""
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and re.fullmatch(r"[A-Za-z0-9._-]+", name) and re.fullmatch(r"[A-Za-z0-9.+!_-]+", dist.version):
            pins[name.lower()] = dist.version
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def _member_text(archive: Path, name: str) -> str:
    import tarfile

    with tarfile.open(archive, "r:*") as tar:
        member = tar.extractfile(name)
        if member is None:
            raise EmulationError(f"Expected {name} in bundle {archive}. Received: no such member.")
        return member.read().decode()


def run_bundle(bundle: Path, cache: Path, threads: int, repeat: int, json_out: Path | None) -> int:
    """Run one bundle's benchmark with accuracy under emulation and print it (``--bundle``).

    The bundle's ``bench.py`` when it has one, else its ``run.py``; both score the test pack.
    """
    from roverlite.deploy import unpack_bundle

    problem = support_problem(cache)
    if problem:
        raise EmulationError(problem)
    with tempfile.TemporaryDirectory(prefix="roverlite-aarch64-") as tmp:
        folder = unpack_bundle(bundle, Path(tmp) / "bundle") if bundle.is_file() else bundle.resolve()
        requirements = parse_requirements((folder / "requirements-device.txt").read_text())
        userland = ensure_userland(cache, requirements)
        if (folder / "bench.py").is_file():
            args = [str(folder / "bench.py"), "--threads", str(threads), "--runs", str(repeat), "--end-to-end"]
        else:
            args = [str(folder / "run.py"), "--threads", str(threads), "--repeat", str(repeat)]
        if json_out is not None:
            args += ["--json", str(json_out.resolve())]
        proc = run_emulated(userland, args, cwd=Path(tmp))
    print(proc.stdout, end="")
    print(f"(emulated: {QEMU} -cpu {QEMU_CPU}; timings above are emulation time, not device time)")
    return 0
