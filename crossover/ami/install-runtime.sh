#!/usr/bin/env bash
# Installs the serving runtime from this folder (an instance runtime bundle: crossover/bundle.py) into the
# virtual environment $1, with no package index: exactly the lock's versions (requirements.txt), every
# wheel checked against its hash. bootstrap.sh runs it at boot, the image pipeline when it bakes an image,
# so both install the same set. It then stamps the bundle's digest into the environment, which tells
# bootstrap.sh that an image already holds this runtime.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${1:?usage: install.sh VIRTUAL_ENV}

# The wheels are built for one Python (the lock's header names it): any other cannot import them.
wanted=$(sed -n '1s/.* for Python \([0-9.]*\) on .*/\1/p' "$here/requirements.txt")
actual=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ "$wanted" != "$actual" ]]; then
  echo "install.sh: $venv runs Python $actual; this runtime bundle's wheels are for Python $wanted" >&2
  exit 1
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$here" \
  --require-hashes -r "$here/requirements.txt"
cp "$here/digest" "$venv/crossover-runtime"
