"""The frozen app's entry script (PyInstaller runs this as __main__)."""

import sys

from workbench.app import main

if __name__ == "__main__":
    sys.exit(main())
