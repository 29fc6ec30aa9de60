#!/bin/sh
# Load test of issue 11: 200 concurrent anonymous pullers (HTTP/2 and
# HTTP/1.1, with and without a token) of a multi-layer image for 60 s,
# every digest verified, while `appliance import` uploads a 2 GiB imgpkg
# tar; the same import alone first, for comparison. All on loopback.
#
#   bench/load.sh                    # full run: 200 pullers, 60 s, 2 GiB import
#   bench/load.sh -quick             # smoke run: 10 s, 256 MiB import
#   bench/load.sh -pullers 50        # fewer pullers
#   APPLIANCE=/tmp/appliance REVISION=abc1234 bench/load.sh
#                                    # a binary built elsewhere (say from a
#                                    # clean checkout of one commit)
#
# Arguments are passed to bench/load (go run ./bench/load -h lists them).
# The Markdown report goes to stdout and to $OUT (default
# bench/results/load-<UTC time>.md), the raw figures to $JSON when set.
# Keep the machine otherwise quiet while it runs.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-$here/bench/results/load-$(date -u +%Y%m%dT%H%M%SZ).md}
work=$(mktemp -d "${TMPDIR:-/tmp}/load-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

cd "$here"
# The commit the appliance is built from, and whether the working tree
# changes what is built (the binary's own build info may lack it).
if [ -n "${APPLIANCE:-}" ]; then
	cp "$APPLIANCE" "$work/appliance"
	rev=${REVISION:-"prebuilt $APPLIANCE"}
else
	rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git status --porcelain -- cmd internal go.mod go.sum 2>/dev/null)" ]; then
		rev="$rev with uncommitted changes under cmd/ or internal/"
	fi
	"$GO" build -o "$work/appliance" ./cmd/appliance
fi
"$GO" build -o "$work/load-bench" ./bench/load
if [ -n "${JSON:-}" ]; then
	set -- -json "$JSON" "$@"
fi
"$work/load-bench" -appliance "$work/appliance" -revision "$rev" -work "$work/data" -out "$OUT" "$@"
echo "report: $OUT" >&2
