"""Mint embed tokens for load tests: `python load_tests/mint_tokens.py --count 1000 -o tokens.txt`.

Each line is an HS256 token signed with the deployment's TUTORHUB_EMBED_SECRET (the same secret a
host website signs its users' tokens with; `--secret` or the environment), for the embed user
`<prefix>-<n>`: Tutorhub creates the user on first sight, so no registration (and no password
hashing) is needed. Pass the file to locust with `--tutorhub-tokens tokens.txt`. The tokens are
credentials of those users until they expire: keep the file private.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from jose import jwt


def mint(secret: str, count: int, *, prefix: str = "load", ttl_s: int = 86_400,
         start: int = 0) -> list[str]:
    exp = int(time.time()) + ttl_s
    return [jwt.encode({"sub": f"{prefix}-{n}", "name": f"Load {n}", "exp": exp}, secret,
                       algorithm="HS256") for n in range(start, start + count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--secret", default=os.environ.get("TUTORHUB_EMBED_SECRET", ""),
                        help="the deployment's embed secret (default: $TUTORHUB_EMBED_SECRET)")
    parser.add_argument("--count", type=int, default=100, help="tokens (users) to mint")
    parser.add_argument("--prefix", default="load", help="embed user ids are PREFIX-N")
    parser.add_argument("--ttl-s", type=int, default=86_400, help="token lifetime, seconds")
    parser.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if not args.secret:
        print("mint_tokens: give --secret or set TUTORHUB_EMBED_SECRET (the server's).",
              file=sys.stderr)
        return 2
    text = "\n".join(mint(args.secret, args.count, prefix=args.prefix, ttl_s=args.ttl_s)) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
