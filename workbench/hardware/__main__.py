"""`python -m workbench.hardware`: print this machine's hardware snapshot as JSON."""

import json
import sys

from workbench.hardware.probe import probe


def main(argv: list[str] | None = None) -> int:
    print(json.dumps(probe().to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
