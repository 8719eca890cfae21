"""ad-purchase: every command of the service under one name (installed by pip install -e .).

    ad-purchase serve [--port PORT]                        the API under gunicorn, as ./run_api.sh --local
    ad-purchase score rows.csv -o scores.csv [...]         score a file (the same as score.py)
    ad-purchase train --synthetic 40000 --out objs/ [...]  train a model (the same as train.py)
    ad-purchase sample 100000 -o rows.parquet [...]        write synthetic rows to try the others with
    ad-purchase token NAME --scopes score [...]            mint an API token and its AUTH_TOKENS_FILE line

`ad-purchase COMMAND --help` shows a command's options.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

from .. import HOME

PROG = "ad-purchase"
EXIT_USAGE = 2
GUNICORN_CONFIG = "gunicorn.conf.py"
APP = "api:app"


def serve(argv: list[str], prog: str) -> int:
    """Replace this process with gunicorn started from the project folder, so the signals a
    terminal or a supervisor sends (Ctrl-C, SIGTERM) reach gunicorn itself."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve the model's API with gunicorn and the project's gunicorn.conf.py. "
                               "The service reads its settings from the environment (see the README).")
    parser.add_argument("--port", type=int, help="port to listen on (default: $PORT, else 1313)")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.port is not None:
        env["PORT"] = str(args.port)
    # gunicorn runs from the project folder; a MODEL_DIR given relative to where the user stands
    # must still name the same folder there.
    if env.get("MODEL_DIR"):
        env["MODEL_DIR"] = os.path.abspath(env["MODEL_DIR"])
    model_dir = Path(env.get("MODEL_DIR") or HOME / "objs")
    if not model_dir.is_dir():
        print(f"error: MODEL_DIR {model_dir} is not a folder; train a model with `{PROG} train` or set MODEL_DIR",
              file=sys.stderr)
        return 1
    print(f"==> starting gunicorn; it answers on http://localhost:{env.get('PORT', '1313')} once it logs 'ready'",
          file=sys.stderr, flush=True)
    os.chdir(HOME)
    os.execve(sys.executable, [sys.executable, "-m", "gunicorn", "--config", GUNICORN_CONFIG, APP], env)
    return 1    # not reached: execve returns only by raising


def _score(argv: list[str], prog: str) -> int:
    from . import score
    return score.main(argv, prog=prog)


def _train(argv: list[str], prog: str) -> int:
    from . import train
    return train.main(argv, prog=prog)


def _sample(argv: list[str], prog: str) -> int:
    from . import sample
    return sample.main(argv, prog=prog)


def _token(argv: list[str], prog: str) -> int:
    from . import token
    return token.main(argv, prog=prog)


COMMANDS: dict[str, Callable[[list[str], str], int]] = {
    "serve": serve, "score": _score, "train": _train, "sample": _sample, "token": _token}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; the commands are {', '.join(COMMANDS)} "
              f"(`{PROG} --help` says what each does)", file=sys.stderr)
        return EXIT_USAGE
    return COMMANDS[command](rest, f"{PROG} {command}")


if __name__ == "__main__":
    sys.exit(main())
