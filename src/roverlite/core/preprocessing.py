"""Input rules shared by the training loader, the export sidecar and the device ``Segmenter``.

Written once here so the three sides cannot drift apart.
"""

from __future__ import annotations

__all__ = ["GRAY_TOLERANCE"]

# Largest channel spread (max - min over R, G, B at one pixel) still read as grayscale. Measured:
# all 6,000 AI4Mars JPEGs decode with spread 0 (chroma is exactly neutral), re-encoding them at
# quality 50-95 keeps 0, and adding +-1 per-channel noise before JPEG gives at most 2; real colour
# images reach 130+ (CWFID). 8 leaves room for other encoders while refusing any colour photo.
# The loader applies it to training images, the sidecar records it, the device applies it to frames.
GRAY_TOLERANCE = 8
