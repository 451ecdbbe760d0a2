"""Build tools, outside the runtime package (not in the wheel): run them from the repository root,
e.g. ``python -m tools.tiny.pretrain --help``. ``torl_rllib`` and ``sandbox`` never import them
(``tests/test_layers.py`` checks it)."""
