#!/usr/bin/env bash
# The papers' experiments on the shipped checkpoints and the synthetic benchmark, one `jaxvx run` each.
#
#   bash scripts/experiments/run.sh OUT [NAME ...]
#
# NAME is a config of this folder without .toml (default: all of them, the slow li_perturbation last). Each writes
# OUT/NAME/ (results.jsonl and summary.md; a sweep: sweep.md, sweep.png and a folder per setting) and resumes
# where it stopped when run again. scripts/experiments/README.md says what each reproduces and what it gave.
set -euo pipefail
out=${1:?usage: bash scripts/experiments/run.sh OUT [NAME ...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
names=("$@")
if (( ${#names[@]} == 0 )); then
  names=(anders_steps anders_lookahead hiley_raw hiley_selective li_pointing jayawardhana_temporal li_perturbation)
fi
for name in "${names[@]}"; do
  config="$here/$name.toml"
  [[ -f "$config" ]] || { echo "no experiment $name ($config)" >&2; exit 2; }
  echo "== $name"
  start=$SECONDS
  python -m jaxvx run "$config" --out "$out/$name"
  echo "== $name: $((SECONDS - start)) s"
done
