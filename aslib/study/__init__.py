"""The study machinery: the arms compared and their runs (:mod:`.arms`), verdict lines and the comparison rule
(:mod:`.verdicts`), notebooks 04/05 as functions (:mod:`.comparison`), reading results (:mod:`.report`) and the
figures (:mod:`.plots`)."""
