#!/usr/bin/env bash
# What `make bench` needs besides the venv: Postfix's smtp-source (Debian
# package postfix) as the load generator, and PostgreSQL for the second run.
# The postfix service is never started (policy-rc.d), only its tools are used.
set -euo pipefail
if ! command -v smtp-source >/dev/null 2>&1 && [ ! -x /usr/sbin/smtp-source ]; then
    echo "bench/setup.sh: installing Debian's postfix for smtp-source" >&2
    apt-get update -qq
    policy=/usr/sbin/policy-rc.d
    created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
    if [ -n "$created" ]; then rm -f "$policy"; fi
fi
bash "$(dirname "$0")/../tests/services/postgres.sh"
