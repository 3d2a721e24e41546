"""Variant rows from what earlier commands left on disk: bench JSON, artifacts, eval and gate results.

What a **run folder** contributes to ``roverlite report RUN_DIR... --out DIR`` (the folder and its
subfolders down to :data:`MAX_DEPTH` levels are searched, so a pipeline's ``compress/<recipe>/<step>/``
is found; hidden entries are skipped). Each JSON is read by :func:`roverlite.core.documents.read_document`,
which names it by its ``kind`` stamp (documents written before the stamp, by their keys); other JSON
(sidecars, splits, audits, a kind this code does not know) is skipped, and a document newer than
this code stops the report with a ValueError:

* **artifacts**: every ``*.tflite`` / ``*.onnx`` with a readable sidecar. Its sidecar gives the
  model name, format, size, sha256, MACs and parameters, and the recipe, from which
  :func:`infer_kind` names the variant's kind (``roverlite compress`` records the step kind and the
  recipe's steps). Copies with the same sha256 (a bundle holds one) count once.
* **bench results** (kind ``bench``): the JSON written by
  :func:`roverlite.deploy.bench.write_bench_json` (``roverlite bench --json``): latency and memory
  (``peak_rss_mb``, ``model_rss_mb``, whether the row was ``isolated`` in its own process) per
  runtime, and the accuracy of the timed runner when it was benchmarked with a test pack. A bench
  row stands on its own: the artifact need not be in the folder.
* **accuracy results** (kind ``eval``): ``miou`` and ``per_class_iou`` of the artifact its ``sha256`` or
  ``artifact`` names (``roverlite eval ARTIFACT --json``, a recipe's ``0_teacher/eval.json``). Of several
  accuracies for one artifact the one over the most images is shown.
* **gate results** (kind ``gate``): a recipe step's ``gate.json`` (``{"step", "passed", "artifacts": [report]}``
  from :func:`roverlite.compress.gate.write_gate`): each report's pass/fail with its reasons, and
  its artifact's per-class IoU (and hazard rates) on the validation images the gate scored. Also (kind ``gate_verdict``, or an
  ``eval`` document with one) a ``gate`` object (``{"passed": bool, "reasons": [...]}``) and the ``sha256``, ``artifact`` or
  ``variant`` name it judges.
* **explicit rows** (kind ``variant``): a ``variant`` object in :class:`VariantRow` form; it replaces
  the collected row of the same name (or adds one). The pipeline can write these to say exactly
  what a variant is.
* **training runs** (kind ``train_summary``): a ``summary.json`` with ``model`` and ``model_path``
  (``roverlite train``) adds the Keras model as its own row with no latency (kind ``teacher float`` when its
  model name contains "teacher"), which serves as the Δ reference.

Artifacts of one model at one precision (``x_tflite_int8.tflite`` and ``x_onnx_int8.onnx``, or any
two whose sidecar recipes name the same ``source_model`` sha256) form one variant with a latency
per runtime. Its accuracy, gate and ``artifact`` are those of the one
artifact whose accuracy was measured over the most images (on a tie, the faster runtime's), so a
row never mixes one file's accuracy with another's gate; ``accuracy_source`` names the image count.

Every row gets a human ``label`` from its files' sidecars (``teacher float``, ``student int8``:
:mod:`roverlite.report.labels`); its ``name`` stays the key it had.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roverlite.core.documents import (
    BenchDocument,
    Document,
    EvalResult,
    GateResult,
    GateVerdict,
    TrainSummary,
    UnknownDocumentError,
    VariantDocument,
    read_document,
)
from roverlite.core.formats import get_spec
from roverlite.deploy.bench import BenchResult
from roverlite.deploy.sidecar import read_sidecar
from roverlite.report.labels import SidecarLookup, read_sidecar_entry, with_labels
from roverlite.report.tables import RuntimeLatency, VariantRow

__all__ = ["collect_run_dirs", "find_testpack", "infer_kind", "variants_from_bench"]

logger = logging.getLogger(__name__)

ARTIFACT_SUFFIXES = (".tflite", ".onnx")
MAX_DEPTH = 3


def variants_from_bench(
    results: Iterable[BenchResult | Mapping[str, Any]],
    kinds: Mapping[str, str] | None = None,
    accuracy: Mapping[str, Mapping[str, Any]] | None = None,
    recipes: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[VariantRow]:
    """One :class:`VariantRow` per model and precision from bench results (failed rows skipped).

    Args:
        results: :class:`BenchResult` objects or their JSON rows.
        kinds: variant name -> kind, overriding :func:`infer_kind`.
        accuracy: sha256 or artifact path -> an accuracy result (``miou``, ``per_class_iou``,
            ``images``), preferred over a bench row's own when it covers more images.
        recipes: sha256 -> the sidecar recipe, for :func:`infer_kind`.

    Returns:
        Rows named ``<model>_<precision>`` (``unet_xs_int8``), in first-seen order.
    """
    groups: dict[tuple[str, str], dict[str, BenchResult]] = {}
    names: dict[tuple[str, str], str] = {}
    for result in results:
        result = result if isinstance(result, BenchResult) else BenchResult.from_dict(result)
        if not result.ok:
            continue
        precision = _precision_of(result.format)
        name = _variant_name(result.name or Path(result.artifact).stem, precision)
        # Artifacts exported from one source model at one precision are one variant (a recipe's
        # float TFLite of the distilled student and its ONNX from the export step), named by the first.
        source = _source_sha((recipes or {}).get(result.sha256 or "", {}))
        key = (f"source:{source}", precision) if source else (name, "")
        names.setdefault(key, name)
        groups.setdefault(key, {})[result.runtime] = result  # a later row of a runtime replaces an earlier one
    rows = []
    for key, by_runtime in groups.items():
        name = names[key]
        fastest = sorted(by_runtime.values(), key=lambda r: r.latency_ms.p50)
        scored = [(r, _best_accuracy([r.accuracy, _lookup(accuracy, r.sha256, r.artifact)])) for r in fastest]
        scored = [(r, m) for r, m in scored if m is not None]
        # The artifact whose accuracy covers the most images; on a tie the faster one (max keeps the first).
        primary, measured = max(scored, key=lambda rm: _images(rm[1])) if scored else (fastest[0], None)
        recipe = (recipes or {}).get(primary.sha256 or "", {})
        precision = _precision_of(primary.format)
        rows.append(VariantRow(
            name=name,
            kind=(kinds or {}).get(name) or infer_kind(primary.name or name, precision, recipe),
            artifact=primary.artifact,
            format=primary.format,
            precision=precision,
            miou=None if measured is None else measured.get("miou"),
            per_class_iou=dict(measured.get("per_class_iou") or {}) if measured else {},
            **_hazard_fields(measured),
            accuracy_source=_accuracy_source(measured),
            macs=primary.macs,
            size_bytes=primary.size_bytes,
            latency=tuple(
                RuntimeLatency(runtime=r.runtime, p50_ms=r.latency_ms.p50, p90_ms=r.latency_ms.p90,
                               artifact=r.artifact, threads=r.threads, cpu=r.host.get("cpu"),
                               peak_rss_mb=r.peak_rss_mb, model_rss_mb=r.model_rss_mb, isolated=r.isolated)
                for r in by_runtime.values()
            ),
        ))
    return rows


def infer_kind(name: str, precision: str | None, recipe: Mapping[str, Any] | None = None) -> str:
    """A variant's kind, from its sidecar recipe where it says, else from its name and precision.

    In order: ``recipe["kind"]`` when set; ``recipe["role"] == "teacher"`` (the pipeline's teacher
    exports) -> ``teacher float``/``teacher int8``; a ``roverlite compress`` provenance (``step_kind`` and
    ``steps``): the teacher step -> ``teacher float``/``teacher int8``, int8 after a QAT step ->
    ``QAT int8``, other int8 -> ``PTQ int8``, float after distillation -> ``distilled student``,
    after pruning -> ``pruned``; without a recipe: "teacher" in the name -> ``teacher float`` /
    ``teacher int8``, other int8 -> ``PTQ int8``, else the precision (``float32``).
    """
    recipe = dict(recipe or {})
    if isinstance(recipe.get("kind"), str) and recipe["kind"].strip():
        return recipe["kind"].strip()
    int8 = precision == "int8"
    step_kind = recipe.get("step_kind")
    if step_kind == "teacher" or recipe.get("role") == "teacher" or (step_kind is None and "teacher" in name.lower()):
        return "teacher int8" if int8 else "teacher float"
    if isinstance(step_kind, str):
        history = _step_kinds(recipe.get("steps"), recipe.get("step"))
        if int8:
            return "QAT int8" if "qat" in history else "PTQ int8"
        for kind in reversed(history):
            if kind in _FLOAT_KINDS:
                return _FLOAT_KINDS[kind]
    if int8:
        return "PTQ int8"
    return precision or "float32"


_FLOAT_KINDS = {"distill": "distilled student", "prune": "pruned", "structured": "pruned (structured)"}


def _step_kinds(steps: Any, upto: Any) -> list[str]:
    """Kinds of a recipe's steps up to and including step ``upto`` (counted from 1)."""
    if not isinstance(steps, list):
        return []
    kinds = []
    for step in steps:
        if isinstance(step, Mapping) and len(step) == 1:
            kinds.append(str(next(iter(step))))
        elif isinstance(step, Mapping) and isinstance(step.get("kind"), str):
            kinds.append(step["kind"])
    return kinds[: upto] if isinstance(upto, int) and upto >= 0 else kinds


def collect_run_dirs(run_dirs: Sequence[str | os.PathLike]) -> list[VariantRow]:
    """Variant rows from run folders (see the module docstring for what each file contributes).

    Raises:
        FileNotFoundError: a run folder does not exist.
        ValueError: nothing usable in any of the folders, or an invalid explicit ``variant`` row.
    """
    folders = [Path(d) for d in run_dirs]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"Run folder not found. Expected a folder. Received: {str(folder)!r}.")
    files = [path for folder in folders for path in _files(folder)]

    sidecars: dict[str, tuple[Path, Any]] = {}
    for path in files:
        if path.suffix.lower() in ARTIFACT_SUFFIXES:
            try:
                sidecar = read_sidecar(path)
            except (ValueError, FileNotFoundError) as err:
                logger.info("skipping %s: %s", path, err)
                continue
            sidecars.setdefault(sidecar.sha256, (path, sidecar))

    found = _Found()
    for path in files:
        if path.suffix.lower() == ".json":
            document = _read_document(path)
            if document is not None:
                found.add(document, path)
    benches, accuracies, gates = found.benches, found.accuracies, found.gates

    recipes = {sha: dict(sidecar.recipe) for sha, (_, sidecar) in sidecars.items()}
    rows = variants_from_bench(benches, accuracy=accuracies, recipes=recipes)
    benched = {r.sha256 for r in benches if r.ok and r.sha256}
    for sha, (path, sidecar) in sidecars.items():
        if sha in benched:
            continue
        precision = _precision_of(sidecar.format)
        name = _variant_name(sidecar.name, precision)
        if any(row.name == name for row in rows):
            continue
        measured = _lookup(accuracies, sha, str(path))
        cost = sidecar.cost or {}
        rows.append(VariantRow(
            name=name, kind=infer_kind(sidecar.name, precision, sidecar.recipe), artifact=str(path),
            format=sidecar.format, precision=precision,
            miou=None if measured is None else measured.get("miou"),
            per_class_iou=dict(measured.get("per_class_iou") or {}) if measured else {},
            **_hazard_fields(measured),
            accuracy_source=_accuracy_source(measured),
            macs=cost.get("macs"), params=cost.get("params"), size_bytes=sidecar.size_bytes,
            notes=("not benchmarked",),
        ))
    rows = _with_params_and_gates(rows, sidecars, gates)
    by_name = {row.name: row for row in found.keras_rows + rows}
    for row in found.explicit:
        by_name[row.name] = row
    if not by_name:
        raise ValueError(
            f"Nothing to report in {[str(f) for f in folders]}. Expected artifacts with sidecars, bench JSON "
            "(roverlite bench --json), eval JSON or a training summary.json. Received: none of them."
        )
    return with_labels(list(by_name.values()), _sidecar_lookup(sidecars))


def find_testpack(run_dirs: Sequence[str | os.PathLike]) -> Path | None:
    """The first ``testpack.npz`` in the run folders or their subfolders (a bundle's), if any."""
    for folder in run_dirs:
        folder = Path(folder)
        if folder.is_dir():
            for path in _files(folder):
                if path.name == "testpack.npz":
                    return path
    return None


# === Helpers ===


def _files(folder: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Files in ``folder`` and its subfolders down to ``depth`` levels, sorted, folder by folder
    (hidden entries, which include the temporary files of atomic writes, are skipped)."""
    found, subfolders = [], []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file():
            found.append(path)
        elif path.is_dir() and not path.is_symlink() and depth > 0:
            subfolders.append(path)
    for sub in subfolders:
        found += _files(sub, depth - 1)
    return found


def _read_document(path: Path) -> Document | None:
    """The run document at ``path``, or None for other JSON (sidecars, splits, audits, unreadable files)."""
    try:
        return read_document(path)
    except UnknownDocumentError as err:
        logger.info("skipping %s: %s", path, err)
        return None


@dataclass
class _Found:
    """What the run documents of the folders contribute, keyed by the artifact each is about."""

    benches: list[BenchResult] = field(default_factory=list)
    accuracies: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    gates: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    explicit: list[VariantRow] = field(default_factory=list)
    keras_rows: list[VariantRow] = field(default_factory=list)

    def add(self, document: Document, path: Path) -> None:
        if isinstance(document, BenchDocument):
            self.benches += _bench_rows(list(document.results), path)
        elif isinstance(document, VariantDocument):
            self.explicit.append(VariantRow.from_dict(document.variant))
        elif isinstance(document, TrainSummary):
            if document.model is not None and document.model_path is not None:
                self.keras_rows.append(_keras_row(document.data, path))
        elif isinstance(document, EvalResult):
            self.accuracy(document.data, {**document.data, "source": str(path)})
            if document.gate is not None:
                self.verdict(document.data, document.gate)
        elif isinstance(document, GateVerdict):
            self.verdict(document.data, document.gate)
        elif isinstance(document, GateResult):
            for report in document.artifacts:
                if isinstance(report.get("artifact"), str):
                    self.gate_report(report, path)

    def accuracy(self, about: Mapping[str, Any], measured: Mapping[str, Any]) -> None:
        """Keep the accuracy over the most images for each key of the artifact it is about."""
        for key in _keys(about):
            if _images(measured) >= _images(self.accuracies.get(key)):
                self.accuracies[key] = measured

    def verdict(self, about: Mapping[str, Any], gate: Mapping[str, Any]) -> None:
        variant = about.get("variant")
        for key in [*_keys(about), *([variant] if isinstance(variant, str) else [])]:
            self.gates[key] = gate

    def gate_report(self, report: Mapping[str, Any], path: Path) -> None:
        """A recipe step's gate report: its verdict and the accuracy of the artifact it scored."""
        keys = _keys(report)
        gate = {k: report.get(k) for k in ("passed", "reasons", "step", "miou_drop", "rare_class_drops")}
        for key in keys:
            self.gates[key] = gate
        measured = {"miou": report.get("artifact_miou"), "per_class_iou": report.get("artifact_iou") or {},
                    "hazards": report.get("artifact_hazards") or {},
                    "confusion_matrix": report.get("artifact_confusion_matrix"),
                    "images": report.get("images"), "source": str(path)}
        if measured["miou"] is not None:
            self.accuracy(report, measured)


def _bench_rows(rows: list[Any], path: Path) -> list[BenchResult]:
    out = []
    for row in rows:
        try:
            out.append(BenchResult.from_dict(row))
        except (ValueError, TypeError) as err:
            logger.info("skipping a row of %s: %s", path, err)
    return out


def _keys(document: Mapping[str, Any]) -> list[str]:
    """What identifies the artifact a result is about: its sha256, resolved path and file name
    (the name still matches after a run folder was moved or copied)."""
    keys = []
    if isinstance(document.get("sha256"), str):
        keys.append(document["sha256"])
    if isinstance(document.get("artifact"), str):
        keys += _path_keys(document["artifact"])
    return keys


def _path_keys(path: str | os.PathLike) -> list[str]:
    return [str(Path(path).resolve()), f"name:{Path(path).name}"]


def _lookup(table: Mapping[str, Mapping[str, Any]] | None, sha256: str | None, artifact: str | None) -> Any:
    if not table:
        return None
    for key in [sha256 or "", *(_path_keys(artifact) if artifact else [])]:
        if key in table:
            return table[key]
    return None


def _images(measured: Mapping[str, Any] | None) -> int:
    if not measured:
        return -1
    images = measured.get("images")
    return images if isinstance(images, int) else 0


def _best_accuracy(candidates: Sequence[Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    present = [c for c in candidates if c and c.get("miou") is not None]
    return max(present, key=_images) if present else None


def _accuracy_source(measured: Mapping[str, Any] | None) -> str | None:
    if not measured:
        return None
    images = measured.get("images")
    where = measured.get("testpack") or measured.get("split") or measured.get("source")
    parts = [f"{images} images" if images else None, f"from {Path(str(where)).name}" if where else None]
    return ", ".join(p for p in parts if p) or None


def _precision_of(fmt: str | None) -> str:
    if not fmt:
        return "float32"
    try:
        return get_spec(fmt).precision
    except ValueError:
        _, _, rest = fmt.partition("_")
        return rest or "float32"


def _source_sha(recipe: Mapping[str, Any]) -> str | None:
    source = recipe.get("source_model") if isinstance(recipe, Mapping) else None
    sha = source.get("sha256") if isinstance(source, Mapping) else None
    return sha if isinstance(sha, str) and sha else None


def _sidecar_lookup(sidecars: Mapping[str, tuple[Path, Any]]) -> SidecarLookup:
    """path -> (format, recipe) of a collected sidecar: by resolved path, else by file name (a bench
    JSON written before its run folder was moved), else read beside the file."""
    by_key: dict[str, tuple[str | None, Mapping[str, Any]]] = {}
    for path, sidecar in sidecars.values():
        for key in _path_keys(path):
            by_key.setdefault(key, (sidecar.format, dict(sidecar.recipe or {})))

    def lookup(artifact: str) -> tuple[str | None, Mapping[str, Any]] | None:
        found = _lookup(by_key, None, artifact)
        return found if found is not None else read_sidecar_entry(artifact)

    return lookup


def _variant_name(model: str, precision: str) -> str:
    return f"{model}_{precision}"


def _keras_row(summary: Mapping[str, Any], path: Path) -> VariantRow:
    model = str(summary["model"])
    return VariantRow(
        name=f"{model}_keras",
        kind="teacher float" if "teacher" in model.lower() else "float (Keras)",
        miou=summary.get("miou"),
        per_class_iou=dict(summary.get("per_class_iou") or {}),
        **_hazard_fields(summary),
        accuracy_source=f"Keras model on the validation split ({path.parent.name})",
        macs=summary.get("macs"),
        params=summary.get("params"),
        notes=("Keras model before export; no device latency",),
    )


def _hazard_fields(measured: Mapping[str, Any] | None) -> dict[str, Any]:
    """A row's hazard rates and confusion matrix from the accuracy result it shows (when it has them)."""
    if not measured:
        return {}
    hazards = measured.get("hazards")
    cm = measured.get("confusion_matrix")
    return {
        "hazards": dict(hazards) if isinstance(hazards, Mapping) else {},
        "confusion_matrix": cm if isinstance(cm, list) and cm else None,
    }


def _with_params_and_gates(
    rows: list[VariantRow], sidecars: Mapping[str, tuple[Path, Any]], gates: Mapping[str, Mapping[str, Any]]
) -> list[VariantRow]:
    by_file = {str(path.resolve()): sidecar for path, sidecar in sidecars.values()}
    by_sha = {sha: sidecar for sha, (_, sidecar) in sidecars.items()}
    out = []
    for row in rows:
        sidecar = by_file.get(str(Path(row.artifact).resolve())) if row.artifact else None
        if sidecar is None:
            sidecar = next((s for s in by_sha.values() if row.artifact and Path(row.artifact).name == s.artifact_file), None)
        updates: dict[str, Any] = {}
        if sidecar is not None and row.params is None and (sidecar.cost or {}).get("params") is not None:
            updates["params"] = int(sidecar.cost["params"])
        gate = gates.get(row.name) or _lookup(gates, None if sidecar is None else sidecar.sha256, row.artifact)
        if gate is not None:
            updates["gate"] = dict(gate)
        out.append(dataclasses.replace(row, **updates) if updates else row)
    return out
