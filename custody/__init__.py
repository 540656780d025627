"""The ``custody`` command line and the small runtime pieces agent and server share (clocks)."""
