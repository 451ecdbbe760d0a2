"""The lowest layer: helpers every other package may use (Ray start-up, CPU counts)."""
