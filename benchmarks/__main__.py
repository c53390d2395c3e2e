"""Entry point: ``uv run python -m benchmarks [--package coap-optim] [--quick]``."""

import sys

from benchmarks.run import main

if __name__ == "__main__":
    sys.exit(main())
