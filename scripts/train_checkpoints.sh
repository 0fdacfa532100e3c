#!/usr/bin/env bash
# Reproduce every shipped checkpoint in jaxvx/shipped_checkpoints/ (NAME.msgpack + NAME.json model card).
#
# Each line below is the exact command recorded in the checkpoint's card ("command"); run from the repository
# root. The runs are sequential (each uses every core) and resumable: after an interruption, add --resume to the
# interrupted line. Same seed and same jax/XLA version on the same kind of machine give bit-identical parameters.
#
#   bash scripts/train_checkpoints.sh            # all of them
#   bash scripts/train_checkpoints.sh c3d-small  # only the lines mentioning c3d-small
#
# Without the `jaxvx` console script (package not installed), set JAXVX="python -m jaxvx" or
# JAXVX="python -m jaxvx.train" (the latter without the "train" word: it is handled below).
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
  # "$@" is a recorded command line starting with "jaxvx train".
  case "${JAXVX:-jaxvx}" in
    *jaxvx.train) ${JAXVX} "${@:3}" ;;
    *) ${JAXVX:-jaxvx} "${@:2}" ;;
  esac
}

while IFS= read -r line; do
  [[ -z "$line" || "$line" == \#* ]] && continue
  if [[ $# -gt 0 && "$line" != *"--model $1 "* ]]; then continue; fi
  echo ">>> $line"
  eval "run $line"
done <<'COMMANDS'
# shipped (jaxvx/shipped_checkpoints/*.json records each line as "command"):
jaxvx train --model c3d-small --data synthetic --steps 4000 --batch-size 8 --lr 0.001 --seed 0 --out jaxvx/shipped_checkpoints
# analysis checkpoints for docs/results.md: title cards in training (Anders' lookahead; it starts from c3d-small: keep
# it after it) and a known context cue (Hiley)
jaxvx train --model c3d-small-titles --data synthetic --steps 1500 --batch-size 8 --lr 0.0005 --seed 0 --out jaxvx/shipped_checkpoints
jaxvx train --model c3d-small-cue --data synthetic --steps 4000 --batch-size 8 --lr 0.001 --seed 0 --out jaxvx/shipped_checkpoints
jaxvx train --model c3d-small-untrained --data synthetic --seed 0 --out jaxvx/shipped_checkpoints
jaxvx train --model lstm-small --data synthetic --steps 2000 --batch-size 8 --lr 0.001 --seed 0 --out jaxvx/shipped_checkpoints
# these two start their per-frame CNN from jaxvx/shipped_checkpoints/lstm-small (recipe init_from): keep them after it
jaxvx train --model cnnlstm-small --data synthetic --steps 1500 --batch-size 8 --lr 0.001 --seed 0 --out jaxvx/shipped_checkpoints
jaxvx train --model lstm-ica-small --data synthetic --steps 1500 --batch-size 8 --lr 0.001 --seed 0 --out jaxvx/shipped_checkpoints
jaxvx train --model r2plus1d-small --data synthetic --steps 4000 --batch-size 8 --lr 0.003 --seed 0 --out jaxvx/shipped_checkpoints
COMMANDS
