"""The aarch64 emulation behind ``tools/emulate_aarch64.py``, split by concern.

``host`` (can this host emulate; qemu-user-static; constants every stage shares) <
``userland`` (Debian's arm64 packages and PyPI's aarch64 wheels, unpacked into a cached root and sites) <
``qemu`` (running a command and probing a bundle under emulation) < ``compare`` (an x86-64 run
against its emulated run) < ``check`` (the end-to-end ``--check``, ``--bundle`` and the results JSON).
Each module imports only from those before it.
"""
