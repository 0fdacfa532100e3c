"""``python -m jaxvx``: the command line of :mod:`jaxvx.cli`."""

import sys

from jaxvx.cli import main

sys.exit(main())
