#!/usr/bin/env bash
# Build a TensorRT engine from a roverlite bundle's ONNX with trtexec, benchmark it, and save the
# latency percentiles as JSON (parse_trtexec.py).
#
#   ./build_engine.sh --bundle ~/bundles/unet_s_onnx                        # fp16 (default)
#   ./build_engine.sh --bundle ~/bundles/unet_s_onnx --precision int8 --calib ~/calib/calib.cache
#   ./build_engine.sh --bundle ~/bundles/unet_s_onnx --dry-run              # print the command only
#   ./build_engine.sh --bundle B --precision fp32 -- --iterations=500       # extra trtexec flags after --
#
# Writes <out>.engine, <out>.log (trtexec's output) and <out>.json (parsed performance summary).
# Environment: TRTEXEC (default: trtexec on PATH, else /usr/src/tensorrt/bin/trtexec), PYTHON.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
  echo "Options: --bundle DIR  --precision fp32|fp16|int8  --calib FILE  --out ENGINE  --load-inputs FILE"
  echo "         --timing-cache FILE  --perf-only  --dry-run  -h|--help"
}

die() { echo "error: $*" >&2; exit 2; }

BUNDLE="" PRECISION="fp16" CALIB="" OUT="" LOAD_INPUTS="" TIMING_CACHE="" PERF_ONLY=0 DRY_RUN=0
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bundle) BUNDLE="${2:?--bundle needs a folder}"; shift 2 ;;
    --precision) PRECISION="${2:?--precision needs fp32, fp16 or int8}"; shift 2 ;;
    --calib) CALIB="${2:?--calib needs a file}"; shift 2 ;;
    --out) OUT="${2:?--out needs a file}"; shift 2 ;;
    --load-inputs) LOAD_INPUTS="${2:?--load-inputs needs a file}"; shift 2 ;;
    --timing-cache) TIMING_CACHE="${2:?--timing-cache needs a file}"; shift 2 ;;
    --perf-only) PERF_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -n "$BUNDLE" ]] || die "--bundle DIR is required (see --help)"
[[ -f "$BUNDLE/bundle.json" ]] || die "'$BUNDLE' is not a bundle folder (no bundle.json)"
if [[ "$PRECISION" == "int8" && -n "$CALIB" && ! -f "$CALIB" ]]; then
  die "calibration cache '$CALIB' not found (make_calib_cache.py explains how to make one)"
fi

TRTEXEC="${TRTEXEC:-}"
if [[ -z "$TRTEXEC" ]]; then
  if command -v trtexec >/dev/null 2>&1; then TRTEXEC="$(command -v trtexec)"
  elif [[ -x /usr/src/tensorrt/bin/trtexec ]]; then TRTEXEC=/usr/src/tensorrt/bin/trtexec
  elif [[ "$DRY_RUN" -eq 1 ]]; then TRTEXEC=trtexec
  else die "trtexec not found: install TensorRT (JetPack ships /usr/src/tensorrt/bin/trtexec) or set TRTEXEC"
  fi
fi

ARGS=(--bundle "$BUNDLE" --precision "$PRECISION" --trtexec "$TRTEXEC" --print0)
[[ -n "$CALIB" ]] && ARGS+=(--calib "$CALIB")
[[ -n "$OUT" ]] && ARGS+=(--out "$OUT")
[[ -n "$LOAD_INPUTS" ]] && ARGS+=(--load-inputs "$LOAD_INPUTS")
[[ -n "$TIMING_CACHE" ]] && ARGS+=(--timing-cache "$TIMING_CACHE")
[[ "$PERF_ONLY" -eq 1 ]] && ARGS+=(--perf-only)
[[ ${#EXTRA[@]} -gt 0 ]] && ARGS+=(-- "${EXTRA[@]}")

# The command comes from trt_command.py (unit-tested); NUL-separated so paths may hold spaces.
CMD=()
while IFS= read -r -d '' part; do CMD+=("$part"); done < <("$PYTHON" "$HERE/trt_command.py" "${ARGS[@]}")
[[ ${#CMD[@]} -gt 0 ]] || die "trt_command.py produced no command"

if [[ "$DRY_RUN" -eq 1 ]]; then
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi

ENGINE=""
for part in "${CMD[@]}"; do
  case "$part" in --saveEngine=*) ENGINE="${part#--saveEngine=}" ;; esac
done
LOG="${ENGINE%.engine}.log"
JSON="${ENGINE%.engine}.json"
echo "building $ENGINE (log: $LOG)" >&2
"${CMD[@]}" 2>&1 | tee "$LOG"
"$PYTHON" "$HERE/parse_trtexec.py" "$LOG" --out "$JSON"
echo "engine: $ENGINE" >&2
echo "latency summary: $JSON" >&2
