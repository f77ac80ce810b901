"""One module per screen: pipeline, captions (+ photo detail), search, evaluation (+ missed queries), runs, help."""
