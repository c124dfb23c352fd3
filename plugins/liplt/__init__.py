"""nncert plugin 'liplt' (work in progress)."""
