"""ToRL on Ray RLlib."""
