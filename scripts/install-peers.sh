#!/usr/bin/env bash
# Installs the real peer programs the tests run against, from Debian's packages,
# only when one is missing. Runs as root (CI and developer machines are root).
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have sipp || need+=(sip-tester)
have stunnel4 || have stunnel || need+=(stunnel4)
have baresip || need+=(baresip-core)
have openssl || need+=(openssl)
have kamailio || need+=(kamailio kamailio-tls-modules)
have svmap || need+=(sipvicious)
have turnutils_uclient || need+=(coturn)
have stun || need+=(stun-client)
have tshark || need+=(tshark)
have sngrep || need+=(sngrep)
# The CDR tests start their own PostgreSQL cluster from Debian's server binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "installing peers: ${need[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers: need root to apt-get install ${need[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
