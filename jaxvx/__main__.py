import sys

from jaxvx.cli import main

sys.exit(main())
