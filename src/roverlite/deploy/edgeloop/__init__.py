"""edgeloop: the camera -> segmentation -> overlay/publish loop shared by the Pi and Jetson scripts.

Device-side code: numpy and the Python standard library, plus whatever frame source is present
(picamera2, OpenCV, Pillow; all optional). It is part of ``roverlite.deploy``, so it comes with an
installed ``roverlite[device]`` and with the copy inside every bundle; the entry scripts
(``firmware_examples/raspberry_pi/pi_loop.py``, ``firmware_examples/jetson/jetson_loop.py``) put a
``--bundle`` folder first on ``sys.path`` before importing it, so the bundle's copy runs.

Modules: ``frames`` (sources), ``png`` (a numpy PNG writer), ``stats`` (latency percentiles),
``publish`` (mask PNGs, JSON lines on stdout, a UNIX socket), ``thermal`` (vcgencmd / sysfs),
``loop`` (the loop and its shutdown), ``app`` (the command-line plumbing both scripts share).
"""

__all__ = ["app", "frames", "loop", "png", "publish", "stats", "thermal"]
