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
# Interop (issue 16): linphone's console client, Jami's daemon (driven over D-Bus on a
# private session bus, hence dbus-daemon) and sox to check recorded audio.
have linphonec || need+=(linphone-cli)
[ -x /usr/libexec/jamid ] || need+=(jami-daemon)
have dbus-daemon || need+=(dbus-daemon)
have sox || need+=(sox)
have gdbus || need+=(libglib2.0-bin)
# SIP over WebSocket (issue 17): JsSIP runs in Debian's headless Chromium.
have chromium || need+=(chromium)
have ip || need+=(iproute2)
# The CDR tests start their own PostgreSQL cluster from Debian's server binaries.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# Node.js runs sipcapture's HEP decoder (hep-js, below).
have node || need+=(nodejs)
have npm || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing peers: ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-peers: need root to apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# hep-js, the Homer project's own HEP3 decoder, from the npm registry: the HEP tests
# decode voipsec's packets with it (tests/peers/hepjs.py). Cached in .cache/ (ignored).
HEP_JS_VERSION=1.0.22
hep_js=.cache/hep-js
if ! grep -qs "\"version\": \"$HEP_JS_VERSION\"" "$hep_js/node_modules/hep-js/package.json"; then
    echo "installing hep-js $HEP_JS_VERSION into $hep_js"
    mkdir -p "$hep_js"
    npm install --prefix "$hep_js" --no-audit --no-fund --silent "hep-js@$HEP_JS_VERSION"
fi

# JsSIP (and esbuild to bundle it for a page), from the npm registry, into .cache/jssip.
sh tests/peers/install_jssip.sh
