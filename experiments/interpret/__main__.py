import sys

from cmml.experiments.cli import interpret_main

sys.exit(interpret_main())
