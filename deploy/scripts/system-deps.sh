#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only when they are missing.
# Runs as root on a fresh Debian machine (CI); prints what it does.
#
# The tests start their own Mosquitto and PostgreSQL on free loopback ports (tests/services/);
# they only need the binaries, never the services Debian's packages start.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
# mosquitto_passwd (password files for broker tests) comes with the broker; the clients are for people.
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need+=(postgresql)
fi
# Browser tests (chunk playback, the dashboard, live view) drive Debian's Chromium headless.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# Chinese glyphs for the dashboard's screenshots (without a CJK font Chromium draws boxes).
dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed" || need+=(fonts-noto-cjk)
# The ALSA source test records through ALSA's null device, which needs ALSA's configuration files.
[ -f /usr/share/alsa/alsa.conf ] || need+=(libasound2-data)
# runuser (util-linux) runs initdb as the postgres user when we are root; essential on Debian.
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
# The deploy tests lint the shell scripts that run on the Pi and in the broker container.
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "system-deps: missing ${need[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "system-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The Debian package starts its own broker on port 1883 (where systemd or sysv-init runs services).
# Stop and disable it every time, not only right after installing: a broker left on 1883 by an
# earlier install would answer any test or demo that wrongly used the default port.
if [ "$(id -u)" = "0" ]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
  else
    # No systemd (a container): the init script may have started it; disabling its links is harmless.
    if [ -x /etc/init.d/mosquitto ]; then
      service mosquitto stop >/dev/null 2>&1 || true
      update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
  fi
fi
