#!/bin/sh
# Runs Mosquitto for Custody's compose deployment, and reloads it when the server rewrites the
# broker's password or ACL file.
#
# Why a wrapper: the server (another container, another user) writes passwd and acl into a shared
# volume whenever a device is enrolled or suspended; Mosquitto reads them only at start and on
# SIGHUP, and, since 2.0, only after dropping root, so it needs them readable by its own user.
# This script copies the files (and the site's TLS files) into /mosquitto, owned by the broker
# user with mode 0600, starts the broker, and every few seconds compares the shared files with
# what it installed: when they changed, it installs them again and sends SIGHUP.
#
# Until the server has written its files, the broker runs with an empty password file: nobody but
# the anonymous health-check listener can connect. A device removed from passwd can no longer
# connect after the reload; whether Mosquitto drops a connection it already has is checked by
# tests/integration/deploy/test_broker_acl.py.
#
# POSIX sh (the image's busybox ash; the tests run it with dash). Environment, with defaults:
#   CUSTODY_BROKER_AUTH_SRC  /custody/broker   passwd and acl, written by the server
#   CUSTODY_BROKER_TLS_SRC   /custody/tls      ca.crt, broker.crt, broker.key
#   MOSQUITTO_DIR            /mosquitto        installs into certs/ and auth/ here
#   MOSQUITTO_CONF           /mosquitto/config/mosquitto.conf
#   MOSQUITTO_BIN            mosquitto
#   MOSQUITTO_USER           mosquitto         owner of the installed files when run as root
#   RELOAD_INTERVAL          2                 seconds between checks for changed files
set -u

auth_src=${CUSTODY_BROKER_AUTH_SRC:-/custody/broker}
tls_src=${CUSTODY_BROKER_TLS_SRC:-/custody/tls}
dir=${MOSQUITTO_DIR:-/mosquitto}
conf=${MOSQUITTO_CONF:-/mosquitto/config/mosquitto.conf}
bin=${MOSQUITTO_BIN:-mosquitto}
owner=${MOSQUITTO_USER:-mosquitto}
interval=${RELOAD_INTERVAL:-2}

say() { echo "custody-broker: $*" >&2; }

# install SRC DST: copy SRC over DST atomically, readable by the broker user only.
install_file() {
  tmp="$2.tmp.$$"
  cp "$1" "$tmp" || return 1
  chmod 0600 "$tmp"
  if [ "$(id -u)" = 0 ]; then chown "$owner" "$tmp" || return 1; fi
  mv -f "$tmp" "$2"
}

install_tls() {
  mkdir -p "$dir/certs"
  for f in ca.crt broker.crt broker.key; do
    if [ ! -r "$tls_src/$f" ]; then
      say "missing $tls_src/$f: create the site TLS files first (see deploy/compose.yml)"
      exit 1
    fi
    install_file "$tls_src/$f" "$dir/certs/$f" || exit 1
  done
}

install_auth() {
  mkdir -p "$dir/auth"
  if [ -r "$auth_src/passwd" ] && [ -r "$auth_src/acl" ]; then
    install_file "$auth_src/passwd" "$dir/auth/passwd" && install_file "$auth_src/acl" "$dir/auth/acl"
  else
    say "no broker files in $auth_src yet: no MQTT user can log in until the server writes them"
    : > "$dir/auth/.empty"
    install_file "$dir/auth/.empty" "$dir/auth/passwd" && install_file "$dir/auth/.empty" "$dir/auth/acl"
    rm -f "$dir/auth/.empty"
  fi
}

# What the shared files hold now; "missing" until both exist.
fingerprint() {
  if [ -r "$auth_src/passwd" ] && [ -r "$auth_src/acl" ]; then
    cat "$auth_src/passwd" "$auth_src/acl" | cksum
  else
    echo missing
  fi
}

install_tls
seen=$(fingerprint)
install_auth

"$bin" -c "$conf" &
pid=$!
# Stop the broker cleanly on `docker stop` (SIGTERM to PID 1, which is this script).
trap 'kill -TERM "$pid" 2>/dev/null' TERM INT

while kill -0 "$pid" 2>/dev/null; do
  # Sleep in the background and wait for it, so a SIGTERM is handled at once, not after the sleep.
  sleep "$interval" &
  wait $! 2>/dev/null
  now=$(fingerprint)
  if [ "$now" != "$seen" ] && kill -0 "$pid" 2>/dev/null; then
    if install_auth; then
      seen=$now
      say "broker files changed: reloading"
      kill -HUP "$pid"
    fi
  fi
done
wait "$pid"
exit $?
