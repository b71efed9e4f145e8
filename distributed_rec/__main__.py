"""Entry point of `python -m distributed_rec`."""

import sys

from distributed_rec.cli import main

if __name__ == "__main__":
    sys.exit(main())
