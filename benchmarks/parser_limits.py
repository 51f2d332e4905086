"""Seconds to parse (or refuse) hostile expression text: runs of whitespace, deep nesting,
text over the length limit.

Usage: python benchmarks/parser_limits.py
"""

from __future__ import annotations

import time

from symloss.expression import MAX_TEXT_LENGTH, Expression

CASES = {
    "f - y + 10k spaces": "f - y" + " " * 10_000,
    "f - y + 40k spaces": "f - y" + " " * 40_000,
    f"f - y + spaces to {MAX_TEXT_LENGTH:,} chars": "f - y" + " " * (MAX_TEXT_LENGTH - 5),
    "99,000 '('": "(" * 99_000,
    "1 MB of spaces": " " * 1_000_000,
    "20 MB of '('": "(" * 20_000_000,
}


def main() -> None:
    print(f"{'text':42s} {'seconds':>8s}  outcome")
    for name, text in CASES.items():
        started = time.perf_counter()
        try:
            outcome = f"parsed: {Expression.parse(text)}"
        except ValueError as error:
            outcome = "refused: " + str(error).split(": ", 1)[1].split(";")[0]
        print(f"{name:42s} {time.perf_counter() - started:8.4f}  {outcome[:60]}")


if __name__ == "__main__":
    main()
