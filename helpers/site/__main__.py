"""``python -m helpers.site --profile quick``: publish a profile's outputs as a static site."""
import sys

from .build import main

sys.exit(main())
