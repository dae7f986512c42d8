#!/bin/sh
# JsSIP, the browser SIP stack, from the npm registry into .cache/jssip (ignored), and
# bundled for a web page: JsSIP 3.13 ships CommonJS modules only, so esbuild (also
# from npm) makes one script, .cache/jssip/jssip.js, defining the global JsSIP.
# tests/peers/jssip.py serves it to headless Chromium. Run from the repository root.
set -eu
JSSIP_VERSION=3.13.8
ESBUILD_VERSION=0.25.12
dir=.cache/jssip
if ! grep -qs "\"version\": \"$JSSIP_VERSION\"" "$dir/node_modules/jssip/package.json" \
    || [ ! -s "$dir/jssip.js" ]; then
    echo "installing JsSIP $JSSIP_VERSION into $dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent \
        "jssip@$JSSIP_VERSION" "esbuild@$ESBUILD_VERSION"
    "$dir/node_modules/.bin/esbuild" --bundle --format=iife --global-name=JsSIP \
        --platform=browser --log-level=warning \
        "$dir/node_modules/jssip/lib/JsSIP.js" --outfile="$dir/jssip.js"
fi
