#!/usr/bin/env bash
# The Debian packages the test suite needs, installed when missing: Chromium for the docs and chat-page tests, and
# Fashion-MNIST for the seed's CNN chapter. Uses apt-get (through sudo when not root). When it cannot install them it
# stops, before any test runs, with one message that names the packages and the command to run.
set -uo pipefail
PKGS=(chromium chromium-driver dataset-fashion-mnist)
# another Chromium-based browser named by LLMTRAIN_CHROMIUM (the tests use it) stands in for Debian's chromium
if [ -n "${LLMTRAIN_CHROMIUM:-}" ] && [ -x "${LLMTRAIN_CHROMIUM}" ]; then PKGS=(dataset-fashion-mnist); fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get update -q && apt-get install -y -q ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
fi
if [ "$SUDO" != none ] && command -v apt-get >/dev/null; then
  echo "installing the Debian packages the tests need: ${missing[*]}"
  if $SUDO apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; then
    exit 0
  fi
fi
echo "error: the tests need the Debian packages ${missing[*]}, which could not be installed here." >&2
echo "       install them as root, then run make test again:  sudo sh -c '$cmd'" >&2
exit 1
