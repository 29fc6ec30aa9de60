#!/bin/sh
# Registry benchmark of issue 2: the appliance against Debian's
# docker-registry (distribution 2.8), on this machine, in one run.
#
#   bench/registry.sh                                  # full run (256 MiB blob, 10 s per manifest phase)
#   bench/registry.sh -blob-mib 16 -duration 2s -warmup 500ms -blob-rounds 1 -paced-rate 0   # smoke run
#   PROFILE=/tmp/prof bench/registry.sh                # also CPU profiles of the appliance, per phase
#
# Arguments are passed to bench/registry (go run ./bench/registry -h lists
# them). The Markdown report goes to stdout and to $OUT (default
# ${TMPDIR:-/tmp}/registry-bench-<UTC time>.md), the raw figures
# to $OUT.json. With PROFILE=DIR the appliance is built from
# bench/applianceprof (the same server, plus pprof on loopback) and a CPU
# profile per phase is written to DIR; read one with
#   go tool pprof -top DIR/appliance DIR/appliance-manifest-cpu.pprof
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}
OUT=${OUT:-${TMPDIR:-/tmp}/registry-bench-$(date -u +%Y%m%dT%H%M%SZ).md}
case $OUT in /*) ;; *) OUT=$(pwd)/$OUT ;; esac
if [ -n "${PROFILE:-}" ]; then
	case $PROFILE in /*) ;; *) PROFILE=$(pwd)/$PROFILE ;; esac
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/registry-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cd "$here"
if [ -n "${PROFILE:-}" ]; then
	mkdir -p "$PROFILE"
	"$GO" build -o "$PROFILE/appliance" ./bench/applianceprof
	bin=$PROFILE/appliance
	set -- -profile "$PROFILE" "$@"
else
	"$GO" build -o "$work/appliance" ./cmd/appliance
	bin=$work/appliance
fi
"$GO" build -o "$work/registry-bench" ./bench/registry

"$work/registry-bench" -appliance "$bin" -out "$OUT" -json "$OUT.json" "$@"
echo "report: $OUT" >&2
