"""What every layer uses: seeding, devices and the code fingerprint (:mod:`.runtime`), atomic results files
(:mod:`.io`) and progress bars (:mod:`.progress`)."""
