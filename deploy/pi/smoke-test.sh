#!/usr/bin/env bash
# Smoke test of the agent's media paths on a real Raspberry Pi (or any Linux box with a camera):
# the V4L2 camera, the ALSA microphone and the hardware H.264 encoder, through the same PyAV
# code the agent runs. Nothing here can be tested on a machine without the hardware, so run it
# on every new board, camera, microphone or image, and keep its output with the device record.
#
#   deploy/pi/smoke-test.sh                      # camera /dev/video0, first ALSA capture card
#   CAMERA=/dev/video2 MIC=plughw:2,0 DURATION=20 deploy/pi/smoke-test.sh
#   KEEP=/tmp/smoke deploy/pi/smoke-test.sh      # also keep the chunks, to look at them in VLC
#
# Environment: PYTHON (the agent's interpreter; default: the repo's .venv, else python3), CAMERA,
# MIC, SIZE (1280x720), FPS (30), DURATION (seconds to record, 12), KEEP (directory for chunks).
# Exit status: 0 when every step passed, 1 otherwise. Steps that cannot apply (no camera) are
# reported as SKIP and do not fail the run, so the script also documents what a board lacks.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi
CAMERA="${CAMERA:-/dev/video0}"
SIZE="${SIZE:-1280x720}"
FPS="${FPS:-30}"
SECONDS_TO_RECORD="${DURATION:-12}"  # not SECONDS: bash owns that name
KEEP="${KEEP:-}"
cd "$repo"

pass=0 fail=0 skip=0
step() { printf '\n== %s\n' "$*"; }
ok() { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
skipped() { echo "SKIP: $*"; skip=$((skip + 1)); }
keep_arg() { if [ -n "$KEEP" ]; then echo "--keep $KEEP/$1"; fi; }

step "board and software"
if [ -r /proc/device-tree/model ]; then tr -d '\0' < /proc/device-tree/model; echo; fi
uname -srm
"$PYTHON" - <<'PY' || { bad "the agent is not importable with $PYTHON"; exit 1; }
import sys, av, numpy
print(f"python {sys.version.split()[0]}, PyAV {av.__version__}, FFmpeg libavcodec {av.library_versions['libavcodec']}")
import agent.media.recorder  # noqa: F401  (the agent's media code imports)
PY

step "video devices"
ls -l /dev/video* 2>/dev/null || echo "no /dev/video* at all"
if command -v v4l2-ctl >/dev/null; then
  v4l2-ctl --list-devices 2>/dev/null
  [ -e "$CAMERA" ] && v4l2-ctl -d "$CAMERA" --list-formats-ext 2>/dev/null | head -40
else
  echo "(install v4l-utils for v4l2-ctl to list camera formats)"
fi

step "ALSA capture devices"
if command -v arecord >/dev/null; then arecord -l 2>/dev/null || true; else echo "(install alsa-utils for arecord -l)"; fi
if [ -z "${MIC:-}" ]; then
  card="$(arecord -l 2>/dev/null | sed -n 's/^card \([0-9]*\):.*device \([0-9]*\):.*/\1,\2/p' | head -1)"
  MIC="${card:+plughw:$card}"
fi
echo "microphone: ${MIC:-none found}"

step "hardware H.264 encoder (h264_v4l2m2m) at $SIZE"
ls -l /dev/video1[0-9] 2>/dev/null | sed 's/^/  /'  # bcm2835-codec: video10 decode, video11 encode
if "$PYTHON" - "$SIZE" "$FPS" <<'PY'
import sys
from fractions import Fraction
from agent.media.encoder import HARDWARE_ENCODER, VideoSettings, probe_video_encoder, select_video_encoder
w, h = (int(x) for x in sys.argv[1].split("x"))
s = VideoSettings(w, h, Fraction(sys.argv[2]), gop_frames=150)
try:
    probe_video_encoder(HARDWARE_ENCODER, s)
    print("h264_v4l2m2m encodes a keyframe")
except Exception as exc:
    print(f"h264_v4l2m2m does not work here: {exc}")
    print(f"the agent would pick: {select_video_encoder(s)}")
    sys.exit(1)
PY
then
  hw=1; ok "hardware encoder opens and encodes"
else
  hw=0; skipped "no working hardware encoder (a Pi 5 has none; the agent falls back to libx264)"
fi

step "synthetic recording through the encoder the agent picks (auto), $SIZE"
# shellcheck disable=SC2046
if "$PYTHON" -m agent.media.selftest --source synthetic --encoder auto --size "$SIZE" --fps "$FPS" \
     --seconds "$SECONDS_TO_RECORD" $(keep_arg auto); then
  ok "auto encoder: every chunk standalone, keyframe first, A/V in sync"
else
  bad "auto encoder chunks"
fi

if [ "$hw" = 1 ]; then
  step "synthetic recording through h264_v4l2m2m at real time (keyframes on boundaries, standalone chunks)"
  # shellcheck disable=SC2046
  if "$PYTHON" -m agent.media.selftest --source synthetic --encoder h264_v4l2m2m --size "$SIZE" --fps "$FPS" \
       --seconds "$SECONDS_TO_RECORD" --realtime $(keep_arg hw); then
    ok "hardware encoder chunks"
  else
    bad "hardware encoder chunks (see above: keyframe placement, parameter sets or frame counts)"
  fi
fi

step "camera $CAMERA ($SIZE @ $FPS), $SECONDS_TO_RECORD s"
if [ -e "$CAMERA" ]; then
  # shellcheck disable=SC2046
  if "$PYTHON" -m agent.media.selftest --source "v4l2:$CAMERA" --no-audio --size "$SIZE" --fps "$FPS" \
       --seconds "$SECONDS_TO_RECORD" $(keep_arg camera); then
    ok "camera recording"
  else
    bad "camera recording"
  fi
else
  skipped "no camera at $CAMERA"
fi

step "camera + microphone ${MIC:-(none)}"
if [ -e "$CAMERA" ] && [ -n "${MIC:-}" ]; then
  # shellcheck disable=SC2046
  if "$PYTHON" -m agent.media.selftest --source "v4l2:$CAMERA+alsa:$MIC" --size "$SIZE" --fps "$FPS" \
       --seconds "$SECONDS_TO_RECORD" $(keep_arg camera-mic); then
    ok "camera and microphone recording (sound present, as long as the picture)"
  else
    bad "camera and microphone recording"
  fi
else
  skipped "needs both a camera and a microphone"
fi

step "summary"
echo "$pass passed, $fail failed, $skip skipped"
[ -n "$KEEP" ] && echo "chunks kept under $KEEP (open them in VLC or a browser)"
[ "$fail" = 0 ]
