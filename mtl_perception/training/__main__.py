"""``python -m mtl_perception.training`` = ``mtl-train``."""

import sys

from .cli import main

sys.exit(main())
