"""edgeloop: the camera -> segmentation -> overlay/publish loop shared by the Pi and Jetson examples.

Device-side code: numpy and the Python standard library, plus whatever frame source is present
(picamera2, OpenCV, Pillow; all optional). The model runs through ``roverlite.deploy.Segmenter``,
from an installed ``roverlite[device]`` or from the copy inside a bundle; nothing here imports it
at import time, so a script can put a bundle's copy on ``sys.path`` first.

Modules: ``frames`` (sources), ``png`` (a numpy PNG writer), ``stats`` (latency percentiles),
``publish`` (mask PNGs, JSON lines on stdout, a UNIX socket), ``thermal`` (vcgencmd / sysfs),
``loop`` (the loop and its shutdown), ``app`` (the command-line plumbing both scripts share).
"""

__all__ = ["app", "frames", "loop", "png", "publish", "stats", "thermal"]
