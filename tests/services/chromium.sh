#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (they drive it
# with Playwright's Python package through executable_path; nothing is
# downloaded at test time). Idempotent.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    echo "chromium.sh: installing Debian's chromium" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi
chromium --version >&2
