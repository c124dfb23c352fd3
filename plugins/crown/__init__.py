"""nncert plugin 'crown' (work in progress)."""
