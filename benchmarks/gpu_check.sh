#!/usr/bin/env bash
# The GPU check (docs/performance.md, "The GPU check"): python -m benchmarks.gpu from the source
# tree, nothing installed and nothing downloaded. The wheels in benchmarks/wheels/ (or --wheels DIR)
# go on PYTHONPATH, each only where its package is not importable already: a pure-Python wheel as
# it is, one with a C extension (pyyaml) unpacked into a temporary folder. Fetch them once, on a
# machine that reaches PyPI:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --no-deps -d benchmarks/wheels torch-pruning tqdm pyyaml
#
# usage: bash benchmarks/gpu_check.sh [--cpu-tiny] [--out DIR] [--wheels DIR] [--work DIR] ...
#        (python -m benchmarks.gpu --help lists every option; $PYTHON picks the interpreter)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheels="$root/benchmarks/wheels"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels)
      [ $# -ge 2 ] || { echo "gpu_check.sh: error: --wheels needs a folder" >&2; exit 2; }
      wheels="$2"; shift 2 ;;
    --wheels=*) wheels="${1#--wheels=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then py="$VIRTUAL_ENV/bin/python"
  elif [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"
  elif command -v python3 >/dev/null 2>&1; then py=python3
  else py=python
  fi
fi

unpacked="$(mktemp -d "${TMPDIR:-/tmp}/icepick-wheels.XXXXXX")"
trap 'rm -rf "$unpacked"' EXIT

export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
extra="$("$py" -m benchmarks.gpu --wheel-path "$wheels" --unpack-to "$unpacked")"
if [ -n "$extra" ]; then
  export PYTHONPATH="$root:$extra${PYTHONPATH#"$root"}"
fi
export PYTHONUNBUFFERED=1

status=0
"$py" -m benchmarks.gpu --wheels "$wheels" ${args[@]+"${args[@]}"} || status=$?
exit "$status"
