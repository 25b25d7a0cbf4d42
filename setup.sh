#!/usr/bin/env bash
# Set up hwgen on a fresh machine and run the main job on the embedded model.
#   ./setup.sh                 install, then: build + simulate (Icarus) + synthesize (iCE40 UP5K)
#   ./setup.sh --install-only  install only (what CI does before the tests)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "setup: hwgen needs Python 3.11 (found $("$PYTHON" --version 2>&1))" >&2; exit 2; }

# From Debian's packages: Icarus Verilog (the default simulator) and Chromium (the tests render
# the HTML report in it, headless).
missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${missing[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif [[ " ${missing[*]} " == *" iverilog "* ]]; then
    echo "setup: Icarus Verilog is missing; install it with: sudo apt-get install -y iverilog" >&2
    exit 2
  else
    echo "setup: Chromium is missing (the HTML report test will skip); sudo apt-get install -y chromium" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch is pinned to the CPU wheel first, so that nothing else can resolve another torch.
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'

# Compile the YoWASP tools once (about 30 s on first use; cached afterwards).
.venv/bin/hwgen doctor

if [ "${1:-}" != "--install-only" ]; then
  .venv/bin/hwgen flow --out build/digits
fi
