#!/usr/bin/env python3
"""The crash drill as a script: ``capflow drill`` with the same flags.

    .venv/bin/python scripts/restart_drill.py --profiles 10 --duration 20 --kills 3
    .venv/bin/python scripts/restart_drill.py --profiles 200 --duration 600 --kills 100 \\
        --report drill.json

See ``capflow/drill.py`` for what it does and ``docs/reliability.md`` for the argument it tests
and the figures of a long run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from capflow import drill


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/restart_drill.py", description=drill.__doc__.split("\n\n")[0]
    )
    drill.add_arguments(parser)
    return drill.main(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
