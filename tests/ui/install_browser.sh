#!/usr/bin/env bash
# Debian's Chromium (and its driver) for the admin UI's browser tests.
# Playwright drives it through executable_path; never run `playwright install`.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
  chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
