"""The pure domain core of the central service: station parameters, tariff, billing and the
charging-queue scheduler. Nothing here does I/O; every operation takes ``now`` as an argument."""
