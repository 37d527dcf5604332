#!/usr/bin/env python3
"""The load test as a script: ``capflow loadtest`` with the same flags. Prints figures only.

    .venv/bin/python scripts/loadtest.py --profiles 1000 --duration 20 --max --report lt.json
    .venv/bin/python scripts/loadtest.py --profiles 10000 --duration 5 --rate 20000 --stack-kb 256

See ``capflow/loadtest.py`` for what is measured and ``docs/performance.md`` for the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capflow import loadtest


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/loadtest.py", description=__doc__.split("\n")[0])
    loadtest.add_arguments(parser)
    return loadtest.main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
