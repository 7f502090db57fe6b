#!/usr/bin/env bash
# Idempotent setup: a venv in .venv with Tutorhub installed.
#   scripts/setup.sh          what `tutorhub serve` needs (e5 embeddings: no torch)
#   scripts/setup.sh --minilm plus torch (CPU) and sentence-transformers for the minilm provider
#   scripts/setup.sh --test   plus test tools, MiniLM, and Debian's chromium, redis-server and
#                             tesseract (OCR)
#   scripts/setup.sh --ocr    plus Debian's tesseract with English and Russian data: OCR of
#                             scanned PDFs and images (optional for serve: without it they fail
#                             with a reason saying so)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WITH_TESTS=0
WITH_MINILM=0
WITH_OCR=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1 && WITH_MINILM=1 && WITH_OCR=1
[ "${1:-}" = "--minilm" ] && WITH_MINILM=1
[ "${1:-}" = "--ocr" ] && WITH_OCR=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
if [ "$WITH_OCR" = 1 ]; then
  command -v tesseract >/dev/null 2>&1 || missing+=(tesseract-ocr)
  for lang in eng rus; do
    [ -n "$(ls /usr/share/tesseract-ocr/*/tessdata/$lang.traineddata 2>/dev/null)" ] \
      || missing+=("tesseract-ocr-$lang")
  done
fi
if [ "$WITH_TESTS" = 1 ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # tests/test_compose.py runs deploy/Caddyfile for real in front of two server instances.
  command -v caddy >/dev/null 2>&1 || missing+=(caddy)
  # Ingestion tests write Cyrillic PDFs with DejaVu Sans.
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} from Debian"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ "$WITH_OCR" = 0 ] && ! command -v tesseract >/dev/null 2>&1; then
  echo "setup: no tesseract: scanned PDFs and images will not be read (scripts/setup.sh --ocr)"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi

extras=""
[ "$WITH_MINILM" = 1 ] && extras="[minilm]"
# The suite runs a locust smoke test: the load extra comes with the tests.
[ "$WITH_TESTS" = 1 ] && extras="[test,load]"
stamp=".venv/.tutorhub-installed-$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)${extras:+-${extras//[^a-z]/}}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # The CPU build of torch first: a bare, unpinned `torch` would pull a multi-GB CUDA build.
  # Set TORCH_INDEX_URL to a CPU wheel index where torch==2.13.0 is not the CPU build.
  if [ "$WITH_MINILM" = 1 ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q torch==2.13.0 \
      ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
  fi
  # requirements.lock pins every distribution to the versions the suite ran with
  # (scripts/lock.sh refreshes it).
  .venv/bin/python -m pip install -q -c requirements.lock -e ".${extras}"
  touch "$stamp"
fi
echo "setup: ready (.venv)"
