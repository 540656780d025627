#!/usr/bin/env bash
# Builds the separate venv that runs LocalStack (the S3 endpoint of the integration tests).
#
# Why a venv of its own: localstack-core pins dozens of packages (boto, werkzeug, cryptography...)
# that would fight the project's own; and later releases need Python 3.12, so the version is pinned.
# Why these extra pins: cbor2 6 and psutil 7 break LocalStack 4.9.2's runtime (PLATFORM-NOTES.md);
# pyOpenSSL 26 removed X509.add_extensions, which LocalStack calls to make its self-signed gateway
# certificate at every start; service_identity 26 needs cryptography 47, which pyOpenSSL 25 refuses.
#
# Idempotent: a stamp file records the exact requirement list; when it matches, nothing is done.
# Usage: deploy/scripts/localstack-venv.sh [VENV_DIR]   (default: .venv-s3 at the repo root)
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$root/.venv-s3}"
py="${PY:-python3}"
reqs=("localstack-core[runtime]==4.9.2" "cbor2<6" "service_identity<26" "psutil<7" "pyopenssl<26")
stamp="$venv/.installed"
want="${reqs[*]}"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

echo "localstack-venv: building $venv ($want)"
# A half-built venv from an interrupted run would otherwise be reused; start clean.
rm -rf "$venv"
"$py" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/pip" install --quiet --disable-pip-version-check "${reqs[@]}"
# Fail here, not in the middle of a test run, if the install is unusable.
"$venv/bin/python" -c "import localstack.runtime.main, localstack.services.s3.provider"
printf '%s' "$want" >"$stamp"
echo "localstack-venv: ready"
