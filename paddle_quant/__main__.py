"""``python -m paddle_quant``: the ``paddle-quant`` command line."""

import sys

from paddle_quant.cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
