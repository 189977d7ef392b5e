"""Back-test the setlist-prediction model on setlists JSON Lines files, one JSON object per line.

    python -m tests.tools.backtest a.jsonl [b.jsonl ...]

The protocol of ``setlist_baselines.py``: the last 20% of each artist's shows, each predicted from
earlier shows only, k = its true number of distinct songs (see mysetlist.predictions.backtest).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mysetlist.predictions.backtest import backtest_artist
from mysetlist.predictions.history import load_jsonl


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for path in argv:
        histories = load_jsonl([path])
        for artist, history in histories.items():
            name = Path(path).name if len(histories) == 1 else f"{Path(path).name}:{artist}"
            print(json.dumps(backtest_artist(history, dataset=name).summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
