#!/bin/sh
# `bundle create` benchmark of issue 4: `appliance bundle create` of ~2 GiB of
# images from a local Debian docker-registry, beside `skopeo copy` of the
# same images to OCI archives, in the same run, on the disk that holds
# $TMPDIR. A second set of a quarter of the size shows whether the
# appliance's memory follows the bundle's size.
#
#   bench/bundle.sh                          # full run: 2 GiB (and 512 MiB), 3 rounds
#   bench/bundle.sh --size 1GiB              # a smaller bundle (the second set is a quarter of it)
#   bench/bundle.sh --size 256MiB --rounds 1 # smoke run, about a minute
#   CPUPROFILE=/tmp/bundle.pprof bench/bundle.sh --rounds 1 --phases appliance
#                                            # also a pprof of internal/bundler, in process
#   go tool pprof -top /tmp/bundle.pprof
#
# Arguments are passed to bench/bundle (go run ./bench/bundle -h lists them).
# The Markdown report goes to stdout and to $OUT (default
# bench/results/bundle-<UTC time>.md), the raw figures to $OUT.json. Keep the
# machine otherwise quiet while it runs.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-$here/bench/results/bundle-$(date -u +%Y%m%dT%H%M%SZ).md}
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
if [ -n "${CPUPROFILE:-}" ]; then
	case $CPUPROFILE in /*) ;; *) CPUPROFILE=$(pwd)/$CPUPROFILE ;; esac
fi
mkdir -p "$(dirname "$OUT")"
work=$(mktemp -d "${TMPDIR:-/tmp}/bundle-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cd "$here"
"$GO" build -o "$work/appliance" ./cmd/appliance
"$GO" build -o "$work/bundle-bench" ./bench/bundle
if [ -n "${CPUPROFILE:-}" ]; then
	set -- -cpuprofile "$CPUPROFILE" "$@"
fi
"$work/bundle-bench" -appliance "$work/appliance" -work "$work/data" -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
