#!/usr/bin/env bash
# Installs the Custody agent on a Raspberry Pi running Raspberry Pi OS (Bookworm, 64-bit advised).
#
#   sudo deploy/pi/install.sh                   # from this checkout
#   sudo deploy/pi/install.sh --source DIR|WHEEL  # from another checkout or a built wheel
#   deploy/pi/install.sh --check                # only report camera, microphone and encoder; changes nothing
#
# What it does (each step is safe to repeat; re-running upgrades the agent in place):
#   1. apt packages: python3-venv (the agent's venv), v4l-utils and alsa-utils (detection, smoke test)
#   2. system user `custody` in groups video (camera, hardware encoder) and audio (microphone)
#   3. /var/lib/custody (keys, buffered footage) owned by custody, mode 0700; /etc/custody/agent.env
#   4. a venv in /opt/custody/venv with the `agent` extra only (no server dependencies on a Pi)
#   5. the systemd unit custody-agent.service (Restart=always, WatchdogSec), enabled; started only
#      once the device is enrolled (deploy/pi/ENROLL.md), restarted if it was already running
#   6. reports the hardware H.264 encoder, cameras and microphones it finds
# Then: enroll (deploy/pi/ENROLL.md) and run deploy/pi/smoke-test.sh on every new board or camera.
set -euo pipefail

PREFIX=/opt/custody
# The two overrides exist for tests/unit/deploy/test_pi_install.py, which runs --check with fakes.
VENV="${CUSTODY_VENV:-$PREFIX/venv}"
CODEC_DEVICE="${CUSTODY_CODEC_DEVICE:-/dev/video11}"
DATA_DIR=/var/lib/custody
CONF_DIR=/etc/custody
AGENT_USER=custody
UNIT_NAME=custody-agent.service
UNIT_DIR=/etc/systemd/system
MIN_PYTHON=3.11

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source_spec="$repo"
check_only=0

usage() { sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_spec="${2:?--source needs a directory or a wheel}"; shift 2 ;;
    --check) check_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

say() { printf '\n== %s\n' "$*"; }
die() { echo "install.sh: $*" >&2; exit 1; }

# -- Detection (also what --check prints) -------------------------------------------------------

board_model() {
  if [ -r /proc/device-tree/model ]; then tr -d '\0' < /proc/device-tree/model; else uname -m; fi
}

# The Pi 4 (and earlier) codec block: bcm2835-codec, whose encoder is /dev/video11. A Pi 5 has no
# hardware H.264 encoder at all; the agent then encodes with libx264 (see agent/media/encoder.py).
detect_encoder() {
  local found=0
  if [ -e "$CODEC_DEVICE" ]; then
    echo "  $CODEC_DEVICE exists"
    found=1
  else
    echo "  no $CODEC_DEVICE (the bcm2835-codec encoder node)"
  fi
  if command -v v4l2-ctl >/dev/null 2>&1; then
    if v4l2-ctl --list-devices 2>/dev/null | grep -q 'bcm2835-codec'; then
      echo "  v4l2-ctl lists bcm2835-codec"
    else
      echo "  v4l2-ctl lists no bcm2835-codec"
      found=0
    fi
  else
    echo "  v4l2-ctl not installed (v4l-utils)"
  fi
  if command -v ffmpeg >/dev/null 2>&1; then
    if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q 'h264_v4l2m2m'; then
      echo "  system ffmpeg has the h264_v4l2m2m encoder"
    else
      echo "  system ffmpeg lacks h264_v4l2m2m"
    fi
  fi
  # What the agent itself uses: PyAV's FFmpeg, inside the venv.
  if [ -x "$VENV/bin/python" ]; then
    if "$VENV/bin/python" -c "import av; av.codec.Codec('h264_v4l2m2m', 'w')" 2>/dev/null; then
      echo "  the agent's PyAV has h264_v4l2m2m"
    else
      echo "  the agent's PyAV lacks h264_v4l2m2m"
      found=0
    fi
  fi
  if [ "$found" = 1 ]; then
    echo "hardware H.264 encoder: yes (bcm2835-codec); the agent probes it at start and prefers it"
  else
    echo "hardware H.264 encoder: no; the agent will encode with libx264 (software: keep to 720p on a Pi)"
  fi
}

detect_media() {
  local cams
  cams="$(find /dev -maxdepth 1 -name 'video*' 2>/dev/null | sort -V | tr '\n' ' ')"
  echo "video devices: ${cams:-none}"
  if command -v v4l2-ctl >/dev/null 2>&1; then
    v4l2-ctl --list-devices 2>/dev/null | sed 's/^/  /' || true
  fi
  if command -v arecord >/dev/null 2>&1 && arecord -l 2>/dev/null | grep -q '^card'; then
    echo "microphones (ALSA capture):"
    arecord -l 2>/dev/null | grep '^card' | sed 's/^/  /'
  else
    echo "microphones (ALSA capture): none found"
  fi
}

report() {
  say "hardware: $(board_model)"
  detect_encoder
  detect_media
}

if [ "$check_only" = 1 ]; then
  report
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (sudo $0), or use --check to only look at the hardware"
command -v systemctl >/dev/null 2>&1 || die "systemd is required (systemctl not found)"

# -- 1. Packages ---------------------------------------------------------------------------------
say "packages"
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v v4l2-ctl >/dev/null 2>&1 || need+=(v4l-utils)
command -v arecord >/dev/null 2>&1 || need+=(alsa-utils)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
else
  echo "all present"
fi
python3 -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$MIN_PYTHON'.split('.'))))" \
  || die "Python $MIN_PYTHON or newer is needed (found $(python3 -V 2>&1)); use Raspberry Pi OS Bookworm"

# -- 2. User and groups --------------------------------------------------------------------------
say "user $AGENT_USER"
if ! id "$AGENT_USER" >/dev/null 2>&1; then
  useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin \
    --comment "Custody recording agent" "$AGENT_USER"
  echo "created"
fi
# Camera, hardware codec and DMA heaps are group video on Raspberry Pi OS; the sound card is audio.
usermod --append --groups video,audio "$AGENT_USER"
id "$AGENT_USER"

# -- 3. Directories ------------------------------------------------------------------------------
say "directories"
# Keys and footage: only the agent reads them. Never chown -R: a re-install must not touch footage.
install -d -m 0700 -o "$AGENT_USER" -g "$AGENT_USER" "$DATA_DIR"
chmod 0700 "$DATA_DIR"
chown "$AGENT_USER:$AGENT_USER" "$DATA_DIR"
install -d -m 0750 -o root -g "$AGENT_USER" "$CONF_DIR"
if [ ! -e "$CONF_DIR/agent.env" ]; then
  # Without --source the agent records a synthetic test picture: point it at the first camera and
  # microphone found now (edit the file when the board has others).
  mic=""
  card="$(arecord -l 2>/dev/null | sed -n 's/^card \([0-9]*\):.*device \([0-9]*\):.*/\1,\2/p' | head -1)"
  [ -n "$card" ] && mic="+alsa:plughw:$card"
  install -m 0640 -o root -g "$AGENT_USER" /dev/null "$CONF_DIR/agent.env"
  cat > "$CONF_DIR/agent.env" <<EOF
# Environment of custody-agent.service (systemd EnvironmentFile syntax).
# Extra arguments for 'custody agent run --data-dir /var/lib/custody' (see 'custody agent run --help'):
# camera and microphone, frame size, chunk length. The server URL and the broker credentials come
# from enrollment and live in the data dir.
CUSTODY_AGENT_ARGS=--source v4l2:/dev/video0$mic
# The site CA the agent trusts for the API and the broker, for a site with its own CA: copy the
# site's ca.crt here and uncomment. Python's TLS then trusts this CA only.
#SSL_CERT_FILE=/etc/custody/ca.crt
EOF
fi
ls -ld "$DATA_DIR" "$CONF_DIR"

# -- 4. The agent in its venv --------------------------------------------------------------------
say "agent venv $VENV"
install -d -m 0755 "$PREFIX"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# The agent extra only: the Pi never runs the server, and the server's dependencies would double
# the install time and size. A wheel is installed as `WHEEL[agent]` the same way as a directory.
"$VENV/bin/pip" install --quiet --upgrade "${source_spec}[agent]"
"$VENV/bin/custody" --help >/dev/null
install -m 0644 "$here/ENROLL.md" "$PREFIX/ENROLL.md"
echo "installed: $("$VENV/bin/pip" show custody 2>/dev/null | sed -n 's/^Version: /custody /p')"

# -- 5. systemd unit -----------------------------------------------------------------------------
say "systemd unit $UNIT_NAME"
install -m 0644 "$here/$UNIT_NAME" "$UNIT_DIR/$UNIT_NAME"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify "$UNIT_DIR/$UNIT_NAME" || die "systemd-analyze verify found problems in $UNIT_NAME"
fi
systemctl daemon-reload
systemctl enable "$UNIT_NAME"
if systemctl is-active --quiet "$UNIT_NAME"; then
  systemctl restart "$UNIT_NAME"
  echo "restarted (it was running: an upgrade)"
else
  echo "enabled; start it after enrollment: systemctl start $UNIT_NAME"
fi

# -- 6. Report -----------------------------------------------------------------------------------
report

say "next"
cat <<EOF
1. Enroll this device: see $PREFIX/ENROLL.md (a one-time token from the server, then
   sudo -u $AGENT_USER $VENV/bin/custody agent run --server URL --data-dir $DATA_DIR --enroll-token TOKEN).
2. systemctl start $UNIT_NAME && journalctl -u $UNIT_NAME -f
3. Smoke test of camera, microphone and encoder, from the checkout:
   PYTHON=$VENV/bin/python deploy/pi/smoke-test.sh
EOF
