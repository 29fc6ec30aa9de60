#!/bin/sh
# apt repository benchmark of issue 5: publishing 1,000 packages with one
# `appliance apt add`, then `apt-get update` (fresh lists every time)
# against the appliance beside the same published tree served by nginx
# (and by Go's http.FileServer), alternating, in one run, on loopback.
#
#   bench/apt.sh                                   # full run: 1,000 packages, 20 rounds per server
#   bench/apt.sh -packages 100 -rounds 3           # smoke run
#   bench/apt.sh -static go                        # without nginx
#
# nginx comes from Debian (apt-get install -y nginx-light); without it the
# benchmark compares with Go's http.FileServer only, and says so. apt-get
# and gpgv are needed. Arguments are passed to bench/apt (go run ./bench/apt
# -h lists them). The Markdown report goes to stdout and to $OUT (default
# ./apt-bench-<UTC time>.md in the current folder), the raw figures to
# $OUT.json. Keep the machine otherwise quiet while it runs.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-$(pwd)/apt-bench-$(date -u +%Y%m%dT%H%M%SZ).md}
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
work=$(mktemp -d "${TMPDIR:-/tmp}/apt-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cd "$here"
"$GO" build -o "$work/appliance" ./cmd/appliance
"$GO" build -o "$work/apt-bench" ./bench/apt
"$work/apt-bench" -appliance "$work/appliance" -work "$work/run" -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
