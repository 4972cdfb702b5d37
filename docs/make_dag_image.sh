#!/usr/bin/env bash
# Redraw docs/images/kedro_viz_dag.png: `kedro viz build` of the base env in a throw-away copy of
# the tracked files, light theme, namespaces expanded, panels and hints hidden, screenshot by
# headless Chromium (apt-get install chromium). Run from the repository root with the venv.
set -euo pipefail
root=$(pwd)
work=$(mktemp -d)
trap 'kill "${server:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
git ls-files -z | xargs -0 -I{} cp --parents {} "$work/"
(cd "$work" && KEDRO_DISABLE_TELEMETRY=1 PYTHONPATH="$work/src" "$root/.venv/bin/kedro" viz build >/dev/null)
state="{theme: 'light', expandAllPipelines: true, visible: {sidebar: false, miniMap: false}}"
hide=".pipeline-global-toolbar,.pipeline-sidebar,.pipeline-toolbar,[class*=feature-hints],[class*=version]"
sed -i "s|<head>|<head><script>localStorage.setItem('KedroViz', JSON.stringify($state));</script>|; s|</head>|<style>$hide{display:none!important}</style></head>|" "$work/build/index.html"
port=8766
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/build" >/dev/null 2>&1 &
server=$!
sleep 1
chromium --headless --no-sandbox --disable-gpu --user-data-dir="$work/profile" --hide-scrollbars \
    --window-size=1684,856 --force-device-scale-factor=2 --virtual-time-budget=60000 \
    --screenshot="$root/docs/images/kedro_viz_dag.png" "http://127.0.0.1:$port/?expandAllPipelines=true"
