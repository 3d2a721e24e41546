"""Comparing a bundle's x86-64 run with its emulated run: JSON schema, logits, masks, mIoU."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aarch64.host import CORTEX_A72_PART, MAX_MIOU_ABS_DIFF, MIN_PIXEL_AGREEMENT
from aarch64.qemu import ProbeOutput, RUNTIME_DISTRIBUTIONS


def json_schema(value: Any) -> Any:
    """The shape of a JSON value: dict keys with their schemas, list element schemas, type names.

    ``int`` and ``float`` are both ``number`` (JSON does not tell them apart); ``None`` is ``null``.
    """
    if isinstance(value, Mapping):
        return {str(k): json_schema(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        elements = {json.dumps(json_schema(v), sort_keys=True) for v in value}
        return [json.loads(e) for e in sorted(elements)]
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def schema_differences(a: Any, b: Any, where: str = "$") -> list[str]:
    """Where the JSON values ``a`` and ``b`` differ in shape: keys, element kinds, types.

    A ``null`` matches any type (the field is nullable: e.g. a profile not taken) and an empty
    list matches any list (e.g. no SIMD flag of interest on one CPU).
    """
    return _schema_diff(json_schema(a), json_schema(b), where)


def _schema_diff(sa: Any, sb: Any, where: str) -> list[str]:
    if "null" in (sa, sb):
        return []
    if isinstance(sa, dict) and isinstance(sb, dict):
        out = [f"{where}.{k}: only in the first" for k in sorted(set(sa) - set(sb))]
        out += [f"{where}.{k}: only in the second" for k in sorted(set(sb) - set(sa))]
        for k in sorted(set(sa) & set(sb)):
            out += _schema_diff(sa[k], sb[k], f"{where}.{k}")
        return out
    if isinstance(sa, list) and isinstance(sb, list):
        if not sa or not sb:
            return []
        if len(sa) == 1 and len(sb) == 1:
            return _schema_diff(sa[0], sb[0], f"{where}[]")
    if sa != sb:
        return [f"{where}: {json.dumps(sa)[:80]} vs {json.dumps(sb)[:80]}"]
    return []


def compare_runs(
    reference: ProbeOutput, emulated: ProbeOutput, pins: Mapping[str, str] | None = None,
    min_agreement: float = MIN_PIXEL_AGREEMENT, max_miou_diff: float = MAX_MIOU_ABS_DIFF,
) -> dict[str, Any]:
    """Masks, logits, mIoU, per-class IoU and JSON schema of an emulated run against the x86 run.

    Args:
        reference, emulated: the probe's outputs on this host and under emulation.
        pins: requirement pins (``{"numpy": "2.4.6", ...}``) both processes must have run with.

    Returns:
        One ``runs`` entry of the results JSON, with ``passed`` and the ``failures`` behind it.
    """
    ref, emu = reference.summary, emulated.summary
    failures = []
    if reference.masks.shape != emulated.masks.shape:
        failures.append(f"mask shapes differ: {reference.masks.shape} vs {emulated.masks.shape}")
        agreement, differing = 0.0, int(reference.masks.size)
    else:
        differing = int(np.count_nonzero(reference.masks != emulated.masks))
        agreement = 1.0 - differing / max(reference.masks.size, 1)
    same_logit_shape = reference.logits.shape == emulated.logits.shape
    logit_diff = float(np.abs(reference.logits - emulated.logits).max()) if same_logit_shape else None
    miou_diff = _abs_diff(ref["miou"], emu["miou"])
    class_diffs = [_abs_diff(ref["per_class_iou"].get(k), emu["per_class_iou"].get(k)) for k in ref["per_class_iou"]]
    schema = schema_differences(reference.document, emulated.document)
    if agreement < min_agreement:
        failures.append(f"pixel agreement {agreement:.6f} < {min_agreement}")
    if miou_diff is None or miou_diff > max_miou_diff:
        failures.append(f"mIoU differs by {miou_diff} (limit {max_miou_diff})")
    if schema:
        failures.append(f"{reference.env.get('runner')} JSON schema differs: {'; '.join(schema[:5])}")
    if reference.env.get("runner") != emulated.env.get("runner"):
        failures.append(f"different bundle runners: {reference.env.get('runner')} vs {emulated.env.get('runner')}")
    if emulated.env.get("machine") != "aarch64":
        failures.append(f"the emulated process reported machine {emulated.env.get('machine')!r}, expected 'aarch64'")
    if emulated.env.get("cpu_parts") != [CORTEX_A72_PART]:
        failures.append(f"the emulated process saw CPU parts {emulated.env.get('cpu_parts')}, "
                        f"expected [{CORTEX_A72_PART!r}]")
    for side, probe in (("x86", reference), ("emulated", emulated)):
        used = {str(probe.env.get("deploy_package"))}
        if probe.document.get("deploy_package"):  # run.py records it too
            used.add(str(probe.document["deploy_package"]))
        if not all(path.startswith(str(probe.bundle) + os.sep) for path in used):
            failures.append(f"the {side} run used roverlite.deploy from {sorted(used)}, not from its bundle")
        for name in ("numpy", RUNTIME_DISTRIBUTIONS.get(str(ref["runtime"]), "")):
            wanted, got = (pins or {}).get(name), (probe.env.get("versions") or {}).get(name)
            if wanted is not None and got != wanted:
                failures.append(f"the {side} run imported {name} {got}, the bundle pins {wanted}")
    return {
        "runtime": ref["runtime"],
        "format": ref["format"],
        "artifact": Path(str(ref["artifact"])).name,
        "sha256": ref["sha256"],
        "bundle_runner": reference.env.get("runner"),
        "testpack_images": ref["images"],
        "pixel_agreement": agreement,
        "pixels": int(reference.masks.size),
        "differing_pixels": differing,
        "logits_max_abs_diff": logit_diff,
        "logits_bit_identical": bool(same_logit_shape and np.array_equal(reference.logits, emulated.logits)),
        "miou_x86": ref["miou"],
        "miou_emulated": emu["miou"],
        "miou_abs_diff": miou_diff,
        "max_class_iou_abs_diff": max((d for d in class_diffs if d is not None), default=None),
        "confusion_matrix_equal": (None if ref["confusion_matrix"] is None or emu["confusion_matrix"] is None
                                   else ref["confusion_matrix"] == emu["confusion_matrix"]),
        "schema_matches": not schema,
        "schema_differences": schema,
        "backend_x86": ref["backend"],
        "backend_emulated": emu["backend"],
        "machine_emulated": emulated.env.get("machine"),
        "cpu_parts_emulated": emulated.env.get("cpu_parts"),
        "python_emulated": emulated.env.get("python"),
        "versions_x86": reference.env.get("versions"),
        "versions_emulated": emulated.env.get("versions"),
        "latency_ms_x86": ref["latency_ms"],
        "latency_ms_emulated": {**(emu["latency_ms"] or {}), "emulated": True},
        "wall_s_x86": round(reference.wall_s, 2),
        "wall_s_emulated": round(emulated.wall_s, 2),
        "passed": not failures,
        "failures": failures,
    }


def _abs_diff(a: float | None, b: float | None) -> float | None:
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return None
    return abs(float(a) - float(b))
