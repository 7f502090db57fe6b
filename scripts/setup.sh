#!/usr/bin/env bash
# Idempotent setup: a venv in .venv with Tutorhub installed.
#   scripts/setup.sh          what `tutorhub serve` needs (e5 embeddings: no torch)
#   scripts/setup.sh --minilm plus torch (CPU) and sentence-transformers for the minilm provider
#   scripts/setup.sh --test   plus test tools, MiniLM, and Debian's chromium + redis-server
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WITH_TESTS=0
WITH_MINILM=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1 && WITH_MINILM=1
[ "${1:-}" = "--minilm" ] && WITH_MINILM=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ "$WITH_TESTS" = 1 ]; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # Ingestion tests write Cyrillic PDFs with DejaVu Sans.
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi

extras=""
[ "$WITH_MINILM" = 1 ] && extras="[minilm]"
[ "$WITH_TESTS" = 1 ] && extras="[test]"
stamp=".venv/.tutorhub-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)${extras:+-${extras//[^a-z]/}}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of torch first: a bare, unpinned `torch` would pull a multi-GB CUDA build.
  # Set TORCH_INDEX_URL to a CPU wheel index where torch==2.13.0 is not the CPU build.
  if [ "$WITH_MINILM" = 1 ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q torch==2.13.0 \
      ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
  fi
  .venv/bin/python -m pip install -q -e ".${extras}"
  touch "$stamp"
fi
echo "setup: ready (.venv)"
