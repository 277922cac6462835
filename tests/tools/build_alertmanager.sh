#!/usr/bin/env bash
# Build Prometheus Alertmanager from its Go module, for the integration tests of
# `sentinel notify --sink alertmanager`, and cache the binary.
#
#   bash tests/tools/build_alertmanager.sh [version]   # prints the binary's path
#
# `go install github.com/prometheus/alertmanager/cmd/alertmanager@v0.35.0` stops because
# the module does not ship the web UI that `ui/web.go` embeds (`//go:embed app/dist`).
# So this copies the module out of the Go module cache, writes placeholder files where the
# embed expects the UI, and builds `./cmd/alertmanager` from the copy. The API v2 that
# Sentinel posts to does not use the UI. Idempotent: a cached binary is reused.
set -euo pipefail
version="${1:-v0.35.0}"
cache="${SENTINEL_CACHE:-$HOME/.cache/sentinel}/alertmanager/${version}"
binary="$cache/alertmanager"
if [ -x "$binary" ]; then
  echo "$binary"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "Go is needed to build Alertmanager (https://go.dev/dl/)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
# A throwaway module so `go mod download` has a go.mod to work in.
(cd "$work" && go mod init sentinel.local/ambuild >/dev/null 2>&1 &&
  GOFLAGS=-mod=mod go mod download -json "github.com/prometheus/alertmanager@${version}" >"$work/dl.json")
moddir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$work/dl.json")"
[ -d "$moddir" ] || { echo "go mod download gave no module directory:" >&2; cat "$work/dl.json" >&2; exit 1; }
cp -r "$moddir" "$work/src"
chmod -R u+w "$work/src"
# Placeholders for every path the UI package embeds.
mkdir -p "$work/src/ui/app/dist"
for f in index.html favicon.ico script.js; do
  printf 'Alertmanager UI is not built in this binary.\n' >"$work/src/ui/app/dist/$f"
done
mkdir -p "$cache"
(cd "$work/src" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -o "$cache/alertmanager.partial" ./cmd/alertmanager) >&2
mv "$cache/alertmanager.partial" "$binary"
"$binary" --version >&2
echo "$binary"
