#!/usr/bin/env bash
# Installs the PyTorch peers used by tests/peers: the CPU torch wheel, captum, and (without their torchvision
# requirement, which has no CPU wheel here) zennit and TorchRay. tests/peers/conftest.py supplies a stand-in for the
# torchvision names they import. zennit 1.0 needs Python >= 3.11.11, so older interpreters get zennit 0.5.1, whose
# rules and composites match (see ../shared/REFERENCE.md).
set -euo pipefail
python -m pip install -q "torch==2.13.0" "captum==0.9.0"
if python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11, 11) else 1)'; then
  zennit="zennit==1.0.0"
else
  zennit="zennit==0.5.1"
fi
python -m pip install -q --no-deps "$zennit" "torchray==1.0.0.2"
