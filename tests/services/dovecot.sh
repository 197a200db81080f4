#!/usr/bin/env bash
# Make sure Debian's Dovecot IMAP server is installed for the IMAP intake tests.
# The tests start their own dovecot process (tests/dovecot.py: a config, users
# and maildirs under a tmp folder, loopback ports); the system service is never
# started or enabled here. Idempotent.
set -euo pipefail
if ! command -v dovecot >/dev/null 2>&1; then
    echo "dovecot.sh: installing Debian's dovecot-imapd" >&2
    apt-get update -qq
    # policy-rc.d 101: do not let the package's postinst start the system service.
    policy=/usr/sbin/policy-rc.d
    created=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
    if [ -n "$created" ]; then rm -f "$policy"; fi
fi
command -v openssl >/dev/null 2>&1 || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
}
echo "dovecot.sh: $(dovecot --version)" >&2
