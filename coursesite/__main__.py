"""python -m coursesite: build the course site (coursesite/build.py)."""
import sys

from coursesite.build import main

sys.exit(main())
