"""Neural-network pieces: the channel-shuffle layers (:mod:`.layers`), how a learned shuffle holds and moves its
matrix (:mod:`.parameterisations`), and a model's learned shuffles acted on together (:mod:`.shuffles`). The
networks built from them are in :mod:`aslib.models`."""
