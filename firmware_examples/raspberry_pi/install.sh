#!/usr/bin/env bash
# Install the roverlite segmentation loop as a systemd service on Raspberry Pi OS (64-bit).
#
#   sudo ./install.sh --bundle ~/unet_xs_tflite_int8.tar.gz      # runtime pinned by the bundle
#   sudo ./install.sh --bundle ~/bundle_dir --package 'roverlite[device]'   # runtime from the package
#   ./install.sh --check-only                                      # platform checks, change nothing
#
# What it does: checks the board (aarch64 only), apt-installs python3-venv (and keeps the apt
# picamera2), creates user 'roverlite' (group video), makes a venv in PREFIX/venv with
# --system-site-packages (picamera2 comes from apt, not pip), installs the device runtime
# (the bundle's requirements-device.txt, or --package), copies the bundle and the loop scripts to
# PREFIX, installs roverlite-seg.service and starts it (unless --no-start).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="/opt/roverlite"
BUNDLE=""
PACKAGE=""
START=1
CHECK_ONLY=0
SERVICE_USER="roverlite"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; echo "Options: --bundle DIR|TAR.GZ  --package SPEC  --prefix DIR  --no-start  --check-only"; }
die() { echo "error: $*" >&2; exit 2; }
say() { echo "==> $*"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) BUNDLE="${2:?--bundle needs a folder or .tar.gz}"; shift 2 ;;
    --package) PACKAGE="${2:?--package needs a pip requirement, e.g. roverlite[device]}"; shift 2 ;;
    --prefix) PREFIX="${2:?--prefix needs a folder}"; shift 2 ;;
    --no-start) START=0; shift ;;
    --check-only) CHECK_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

# --- Platform checks -------------------------------------------------------------------------
ARCH="$(uname -m)"
case "$ARCH" in
  aarch64|arm64) ;;
  armv7l|armv6l|armhf)
    die "this is 32-bit Raspberry Pi OS ($ARCH). ai-edge-litert (LiteRT) publishes no $ARCH wheel, so the \
loop cannot run here. Reflash the card with Raspberry Pi OS (64-bit) (Pi 3, 4, 5, Zero 2 W) and run this again." ;;
  *) die "unsupported machine '$ARCH': this installer is for Raspberry Pi OS 64-bit (aarch64)." ;;
esac
PY_VERSION="$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || echo none)"
[[ "$PY_VERSION" != none ]] || die "python3 not found"
if [[ -z "$BUNDLE" && -z "$PACKAGE" ]]; then
  [[ "$CHECK_ONLY" -eq 1 ]] || die "give --bundle (recommended) and/or --package (see --help)"
fi
if [[ -n "$PACKAGE" && "$PY_VERSION" != "3.11" ]]; then
  die "roverlite needs Python 3.11 (requires-python >=3.11,<3.12); this system has $PY_VERSION. \
Use --bundle without --package: the bundle carries its own roverlite.deploy and pins only numpy and the runtimes."
fi
[[ "$PY_VERSION" == "3.11" ]] || echo "warning: Python $PY_VERSION; the bundle's pins were checked with 3.11 wheels" >&2
say "platform ok: $ARCH, Python $PY_VERSION"
[[ "$CHECK_ONLY" -eq 0 ]] || exit 0
[[ "$EUID" -eq 0 ]] || die "run as root (sudo): it writes $PREFIX, /etc/systemd/system and adds a user"

# --- System packages and user --------------------------------------------------------------
say "apt packages"
apt-get update -qq
apt-get install -y -qq python3-venv python3-pip
if ! id "$SERVICE_USER" >/dev/null 2>&1; then
  say "system user $SERVICE_USER (group video for the camera and vcgencmd)"
  useradd --system --home-dir "$PREFIX" --shell /usr/sbin/nologin --user-group --groups video "$SERVICE_USER"
fi
mkdir -p "$PREFIX/app"

# --- Bundle --------------------------------------------------------------------------------
if [[ -n "$BUNDLE" ]]; then
  say "bundle -> $PREFIX/bundle"
  rm -rf "$PREFIX/bundle.new"
  mkdir -p "$PREFIX/bundle.new"
  if [[ -f "$BUNDLE" ]]; then
    tar -xzf "$BUNDLE" -C "$PREFIX/bundle.new" --no-same-owner
  elif [[ -d "$BUNDLE" ]]; then
    cp -a "$BUNDLE/." "$PREFIX/bundle.new/"
  else
    die "bundle '$BUNDLE' not found"
  fi
  [[ -f "$PREFIX/bundle.new/bundle.json" ]] || die "'$BUNDLE' is not a roverlite bundle (no bundle.json)"
  rm -rf "$PREFIX/bundle"
  mv "$PREFIX/bundle.new" "$PREFIX/bundle"
fi

# --- Python environment ----------------------------------------------------------------------
say "venv $PREFIX/venv (with system site-packages, for apt's picamera2)"
python3 -m venv --system-site-packages "$PREFIX/venv"
PIP=("$PREFIX/venv/bin/python" -m pip install --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
if [[ -n "$PACKAGE" ]]; then
  say "pip install $PACKAGE"
  "${PIP[@]}" "$PACKAGE"
else
  say "pip install -r bundle/requirements-device.txt"
  "${PIP[@]}" -r "$PREFIX/bundle/requirements-device.txt"
fi
if python3 -c "import picamera2" >/dev/null 2>&1; then
  # apt's simplejpeg (imported by picamera2) is built for Debian's NumPy 1.x; the venv has NumPy 2.
  # A venv-local simplejpeg wheel built for NumPy 2 shadows it (raspberrypi/picamera2#1211).
  say "simplejpeg for NumPy 2 (picamera2 is installed)"
  "${PIP[@]}" --ignore-installed simplejpeg
fi
"$PREFIX/venv/bin/python" -c "import numpy, ai_edge_litert.interpreter; print('runtime ok: numpy', numpy.__version__)"

# --- Loop scripts and service ------------------------------------------------------------------
say "loop scripts -> $PREFIX/app"
# The loop itself (roverlite.deploy.edgeloop) travels inside every bundle; only the entry script is copied.
rm -rf "$PREFIX/app/edgeloop" "$PREFIX/app/raspberry_pi"
mkdir -p "$PREFIX/app/raspberry_pi"
cp -a "$HERE/pi_loop.py" "$PREFIX/app/raspberry_pi/"
chown -R root:root "$PREFIX/app"
sed "s#/opt/roverlite#$PREFIX#g" "$HERE/roverlite-seg.service" > /etc/systemd/system/roverlite-seg.service
[[ -f /etc/default/roverlite-seg ]] || printf '# Extra pi_loop.py options, e.g. --threads 3 --max-frames 1000\nROVERLITE_ARGS=""\n' > /etc/default/roverlite-seg
systemctl daemon-reload
if [[ "$START" -eq 1 ]]; then
  systemctl enable --now roverlite-seg
  say "started: journalctl -u roverlite-seg -f"
else
  say "installed, not started: sudo systemctl enable --now roverlite-seg"
fi
