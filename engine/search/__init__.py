"""Searches for a verdict beyond one bounding pass: attacks (falsification), input-splitting and ReLU-split branch and bound, MILP, and the optimiser they share."""
