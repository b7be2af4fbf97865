#!/usr/bin/env bash
# The browser tests (tests/test_ui_browser.py) drive Debian's Chromium through Playwright, never
# a browser Playwright downloads. Installs it when it is missing; GAND_CHROMIUM may name another.
set -uo pipefail
if [ -n "${GAND_CHROMIUM:-}" ] && [ -x "${GAND_CHROMIUM}" ]; then exit 0; fi
if [ -x /usr/bin/chromium ] || command -v chromium >/dev/null; then exit 0; fi
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo -n"; fi
echo "installing chromium for the browser tests (apt-get install chromium)"
LOG="${TMPDIR:-/tmp}/gand-chromium-install.log"
if ! { $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium; } \
    > "$LOG" 2>&1; then
  tail -20 "$LOG"
  # Not fatal here: the browser tests then fail (under CI) or skip (elsewhere) and say why.
  echo "could not install chromium (full log: $LOG); set GAND_CHROMIUM to a Chromium binary" >&2
fi
exit 0
