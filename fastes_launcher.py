"""The ``fastes`` console command: loads the package inside a guard, so that Ctrl-C while
it loads (OpenCV, Numba) exits quietly instead of printing a traceback."""
import sys


def main() -> int:
    try:
        from fastes.cli import main as cli_main
    except KeyboardInterrupt:
        print("fastes: interrupted", file=sys.stderr)
        return 130
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
