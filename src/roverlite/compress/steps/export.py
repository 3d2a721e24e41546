"""The ``export`` step: the current model in each format (``roverlite.export``); the gate judges every artifact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from roverlite.compress._registry import StepBase, StepContext, check_count, register_step
from roverlite.config import ConfigError
from roverlite.export.formats import get_format

__all__ = ["ExportStep"]


@register_step("export")
@dataclass(frozen=True)
class ExportStep(StepBase):
    """Export the current model to each format (``roverlite.export``); the gate judges every artifact.

    Attributes:
        formats: names from ``roverlite.export.list_formats()``.
        int8_io: int8 TFLite with int8 input/output (``false``: float I/O).
        representative_count: train images used to calibrate int8 formats.
        check_images: validation images of the export's own self-check: all of them up to this
            many, else a seeded subset (``roverlite.export.verify.choose_check_images``).
    """

    formats: tuple[str, ...] = ("tflite_int8",)
    int8_io: bool = True
    representative_count: int = 100
    check_images: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", (self.formats,) if isinstance(self.formats, str) else tuple(self.formats))
        if not self.formats:
            raise ConfigError("export.formats is empty. Expected at least one format, e.g. [tflite_int8].")
        for name in self.formats:
            get_format(name)
        duplicates = sorted({f for f in self.formats if self.formats.count(f) > 1})
        if duplicates:
            raise ConfigError(f"Expected each export format once. Received: {duplicates} more than once.")
        check_count(self.representative_count, "export.representative_count", 1)
        check_count(self.check_images, "export.check_images", 1)

    produces_model: ClassVar[bool] = False
    ends_chain: ClassVar[bool] = True

    def run(self, model: Any, ctx: StepContext) -> tuple[Any, dict[str, Any]]:
        """Nothing to do to the model: the runner exports it in :meth:`export_settings`' formats."""
        return model, {}

    def export_settings(self, quantized: bool) -> ExportStep:
        return self
