"""``python -m mysetlist.experiments.cli``: analyse exported counts, JSON on stdin to JSON on stdout.

The document is described in :mod:`mysetlist.experiments.analysis` (``make ab-stats`` runs this).
Exit status 0 with the analysis on stdout; 2 with a one-line message on stderr when the input is
not JSON or is not a valid document.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from mysetlist.experiments.analysis import analyze

EXIT_INVALID = 2


def main(stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Read one document from ``stdin``, write its analysis to ``stdout``; return the exit status."""
    stdin = stdin if stdin is not None else sys.stdin
    stdout = stdout if stdout is not None else sys.stdout
    stderr = stderr if stderr is not None else sys.stderr
    try:
        # NaN and Infinity are not JSON; Python's parser accepts them unless told otherwise.
        document = json.loads(stdin.read(), parse_constant=_reject_constant)
        result = analyze(document)
    except json.JSONDecodeError as exc:
        print(f"ab-stats: the input is not valid JSON: {exc}", file=stderr)
        return EXIT_INVALID
    except ValueError as exc:
        print(f"ab-stats: invalid input: {exc}", file=stderr)
        return EXIT_INVALID
    json.dump(result, stdout, indent=2, allow_nan=False)
    stdout.write("\n")
    return 0


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


if __name__ == "__main__":
    sys.exit(main())
