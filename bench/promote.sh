#!/bin/sh
# Promotion benchmark of issue 10: `appliance promote --all` of the import
# benchmark's 2 GiB set into a fresh docker-registry serving TLS, beside
# `skopeo sync --all` of the same repository from the appliance into
# another fresh one, interleaved over rounds, in one run.
#
#   bench/promote.sh                  # full run: 2 GiB, 8 images × 4 layers of 64 MiB
#   bench/promote.sh -quick           # smoke run: 128 MiB
#   bench/promote.sh -parallel 8      # appliance promote --parallel 8
#   PERF=1 bench/promote.sh           # also a system-wide perf record -g of each promotion
#
# Arguments are passed to bench/promote (go run ./bench/promote -h lists
# them). The Markdown report goes to stdout and to $OUT (default
# ./promote-bench-<UTC time>.md in the current folder), the raw figures to
# $OUT.json. Keep the machine otherwise quiet while it runs.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-$(pwd)/promote-bench-$(date -u +%Y%m%dT%H%M%SZ).md}
work=$(mktemp -d "${TMPDIR:-/tmp}/promote-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

cd "$here"
# The commit the appliance is built from, and whether the working tree
# changes what is built (the binary's own build info may lack it).
rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain --untracked-files=no -- cmd internal go.mod go.sum 2>/dev/null)" ]; then
	rev="$rev with uncommitted changes under cmd/ or internal/"
fi
"$GO" build -o "$work/appliance" ./cmd/appliance
"$GO" build -o "$work/promote-bench" ./bench/promote
if [ -n "${PERF:-}" ]; then
	mkdir -p "${OUT%.md}-perf"
	set -- -perf "${OUT%.md}-perf" "$@"
fi
"$work/promote-bench" -appliance "$work/appliance" -revision "$rev" -work "$work/data" -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
