"""The tiny CPU "base model": synthetic arithmetic data, a character tokenizer and its pretraining.

Submodules: ``synthetic`` (problems and pretraining documents), ``tokenizer`` (character-level
``PreTrainedTokenizerFast``), ``pretrain`` (the training CLI) and ``evaluate`` (its tool-using
self-check). The trained model ships in ``assets/tiny-math-base``.
"""
