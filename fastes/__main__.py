import sys

from .cli import main

if __name__ == "__main__":  # importing this module (e.g. from a spawned process) must not run the CLI
    sys.exit(main())
