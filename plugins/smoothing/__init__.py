"""nncert plugin 'smoothing' (work in progress)."""
