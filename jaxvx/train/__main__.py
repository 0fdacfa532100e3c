"""``python -m jaxvx.train ARGS``: the same as ``jaxvx train ARGS``."""

import sys

from jaxvx.train import cli

sys.exit(cli())
