#!/bin/sh
# Import benchmark of issue 3: `appliance import` of a ~2 GiB imgpkg tar of
# random layers, beside `skopeo copy` of the same images into Debian's
# docker-registry, and the machine's own limits (sha256 on one core,
# dd conv=fsync), all in one run, on the disk that holds $TMPDIR.
#
#   bench/import.sh                       # full run: 2 GiB, 8 images × 4 layers of 64 MiB
#   bench/import.sh -quick                # smoke run: 128 MiB
#   bench/import.sh -size-mib 4096        # a bigger bundle
#   IMGPKG= bench/import.sh               # without imgpkg (default: ../shared/tools/imgpkg, when there)
#   PERF=1 bench/import.sh                # also a system-wide perf profile of each timed phase
#   CPUPROFILE=/tmp/import.pprof bench/import.sh -modes '' -skopeo-from ''
#                                         # pprof of the in-process import only
#
# Arguments are passed to bench/import (go run ./bench/import -h lists them).
# The Markdown report goes to stdout and to $OUT (default
# ./import-bench-<UTC time>.md in the current folder), the raw figures to
# $OUT.json. Keep the machine otherwise quiet while it runs.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-$(pwd)/import-bench-$(date -u +%Y%m%dT%H%M%SZ).md}
work=$(mktemp -d "${TMPDIR:-/tmp}/import-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

cd "$here"
"$GO" build -o "$work/appliance" ./cmd/appliance
"$GO" build -o "$work/import-bench" ./bench/import
IMGPKG=${IMGPKG-$here/../shared/tools/imgpkg}   # IMGPKG= (empty) skips imgpkg
if [ -n "$IMGPKG" ] && [ -x "$IMGPKG" ]; then
	set -- -imgpkg "$IMGPKG" "$@"
fi
if [ -n "${CPUPROFILE:-}" ]; then
	set -- -cpuprofile "$CPUPROFILE" "$@"
fi
if [ -n "${PERF:-}" ]; then
	mkdir -p "${OUT%.md}-perf"
	set -- -perf "${OUT%.md}-perf" "$@"
fi
"$work/import-bench" -appliance "$work/appliance" -work "$work/data" -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
