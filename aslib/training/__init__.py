"""Training a network: the run's configuration and command line (:mod:`.config`), the data sets (:mod:`.data`),
the pieces of a step (:mod:`.loop`), the loop itself (:mod:`.train`), data parallelism (:mod:`.distributed`) and
speed measurements (:mod:`.speed`). The trainer knows nothing of the model beyond its learned shuffles."""
