"""nncert plugin 'semantic' (work in progress)."""
