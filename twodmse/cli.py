"""`twodmse` command line: one sub-command per module, each registered by its `add_cli`."""
import argparse
import importlib
import sys

# Each module defines add_cli(subparsers) that adds its sub-command and sets func=...
COMMAND_MODULES = ["evaluate", "train", "mteb_eval", "speed", "report"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="twodmse",
        description="Train and measure elastic sentence embeddings at every (layer, dim) cell.",
        epilog="Run `twodmse COMMAND --help` for the options of each command. "
               "Offline: set HF_HUB_OFFLINE=1; data are read from $TWODMSE_DATA (default ../shared/data).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"twodmse.{name}")
        except ImportError as e:
            if e.name and e.name.startswith("twodmse"):
                continue  # module not part of this build yet
            raise
        module.add_cli(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
