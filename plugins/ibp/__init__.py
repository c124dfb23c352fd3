"""IBP domain."""
