"""The tiny CPU "base models"' build tools: synthetic data, a character tokenizer and pretraining.

Submodules: ``synthetic`` (the demo's problems and pretraining documents), ``emergent`` (the
emergent lab's curriculum), ``tokenizer`` (character-level ``PreTrainedTokenizerFast``),
``pretrain`` (the training CLI) and ``self_check`` (its tool-using self-check). Run from the
repository root, e.g. ``python -m tools.tiny.pretrain --out assets/tiny-math-base``. The trained
models ship in ``assets/tiny-math-base`` and ``assets/tiny-emergent-base`` as plain Hugging Face
folders (``tokenizer.json`` loads with ``AutoTokenizer``), so the runtime needs none of this.
"""
