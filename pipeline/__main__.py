"""`python -m pipeline --input INPUT --output OUTPUT [options]`."""

import sys

from pipeline.main import main

if __name__ == "__main__":
    sys.exit(main())
