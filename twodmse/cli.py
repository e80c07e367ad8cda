"""`twodmse` command line: one sub-command per module, each registered by its `add_cli`.

The one error boundary of every command: a util.UserError (or a write refused by the disk) prints its message,
which names the file, key or flag and the fix, and exits 2; any other exception is a bug and keeps its traceback."""
import argparse
import importlib
import sys

from . import util

# command -> module; each module defines add_cli(subparsers) that adds it and sets func=...
COMMANDS = {"eval": "evaluate", "train": "train", "mteb": "mteb_eval", "speed": "speed", "report": "report",
            "export": "export", "card": "card"}


class Parser(argparse.ArgumentParser):
    """argparse with the one-line error of every other mistake: no usage block before it (--help has that)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser(command=None):
    """Import only the module of `command` (so `twodmse report` never loads torch); all for --help."""
    parser = Parser(
        prog="twodmse",
        description="Train and measure elastic sentence embeddings at every (layer, dim) cell.",
        epilog="Run `twodmse COMMAND --help` for the options of each command. "
               "Offline: set HF_HUB_OFFLINE=1; data are read from $TWODMSE_DATA (default ../shared/data).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [COMMANDS[command]] if command in COMMANDS else COMMANDS.values()
    for name in names:
        importlib.import_module(f"twodmse.{name}").add_cli(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (util.UserError, OSError) as e:
        error = e if isinstance(e, util.UserError) else util.disk_error(e, e.filename)
        if error is None:
            raise
        print(f"twodmse {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes from it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
