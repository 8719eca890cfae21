"""Mint a bearer token for the API: print it once, and the line for AUTH_TOKENS_FILE.

    python -m ad_purchase.cli.token NAME --scopes score[,outcomes][,ops] [--append FILE]

The token is printed on the first line of standard output and nowhere else: hand it to the
caller and keep no copy.  The second line is what the token file holds for it (the name, the
scopes and the token's SHA-256); with --append it is also added to FILE (created readable by its
owner only).  The service reads the file at start and again on SIGHUP to the gunicorn master.
"""
from __future__ import annotations

import argparse
import os
import secrets
import sys

from ..serving.auth import NAME, SCOPES, digest_of, parse_tokens

PREFIX = "adp_"                 # recognisable in a leaked-secret scan
TOKEN_BYTES = 32


def mint() -> str:
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def file_line(name: str, scopes: list[str], token: str) -> str:
    return f"{name} {','.join(scopes)} {digest_of(token).hex()}"


def main(argv: list[str] | None = None, prog: str = "python -m ad_purchase.cli.token") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="who holds the token: shown in the logs (letters, digits, '.', '_', '-')")
    parser.add_argument("--scopes", required=True,
                        help=f"comma-separated, from {', '.join(SCOPES)}: score calls /predict, ops reads /model, "
                             "/model/drift and /metrics")
    parser.add_argument("--append", metavar="FILE", help="also add the line to this token file")
    args = parser.parse_args(argv)
    if not NAME.fullmatch(args.name):
        parser.error(f"name {args.name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                     "letter or digit")
    scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if not scopes or unknown:
        parser.error(f"--scopes takes {', '.join(SCOPES)} separated by commas (got {args.scopes!r})")
    scopes = sorted(set(scopes), key=SCOPES.index)
    token = mint()
    line = file_line(args.name, scopes, token)
    parse_tokens(line, "(minted)")          # the line is one the service reads
    if args.append:
        descriptor = os.open(args.append, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
            if handle.tell() and not _ends_with_newline(args.append):
                handle.write("\n")
            handle.write(line + "\n")
    print(token)
    print(line)
    where = f"added to {args.append}" if args.append else "add it to the token file"
    print(f"The first line is {args.name}'s token, shown only now: hand it over and keep no copy.\n"
          f"The second line is for AUTH_TOKENS_FILE ({where}); then send SIGHUP to the gunicorn master "
          "(or restart the pods) to load it.", file=sys.stderr)
    return 0


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


if __name__ == "__main__":
    sys.exit(main())
