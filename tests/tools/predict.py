"""The prediction for one show of a setlists JSON Lines file, from the shows before it only (a model
trained on those shows, as the nightly trainer would).

python -m tests.tools.predict FILE.jsonl SHOW_ID [SETLIST_LENGTH]
"""

from __future__ import annotations

import json
import sys

from mysetlist.predictions.history import load_jsonl
from mysetlist.predictions.model import train_history
from mysetlist.predictions.predict import DEFAULT_LENGTH, predict_show


def main(argv: list[str]) -> int:
    if len(argv) not in {2, 3}:
        print(__doc__, file=sys.stderr)
        return 2
    path, show_id = argv[0], argv[1]
    length = int(argv[2]) if len(argv) == 3 else DEFAULT_LENGTH
    for history in load_jsonl([path]).values():
        try:
            index = history.index_of(show_id)
        except KeyError:
            continue
        show = history.shows[index]
        before = history.prefix(index)
        model = train_history(before)
        prediction = predict_show(before, show, setlist_length=length, model=model)
        out = prediction.as_dict()
        predicted = {s.song for s in prediction.songs}
        out["actual_songs"] = len(show.songs)
        out["actual_hits"] = sum(1 for s in show.songs if s in predicted)
        print(json.dumps(out, indent=1))
        return 0
    print(f"show {show_id} not found in {path}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
