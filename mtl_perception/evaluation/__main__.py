"""``python -m mtl_perception.evaluation`` = ``mtl-eval``."""

import sys

from .evaluate import main

sys.exit(main())
