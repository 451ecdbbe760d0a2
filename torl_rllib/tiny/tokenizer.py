"""A character-level tokenizer for the tiny CPU model.

One token per character of printable ASCII (space to ``~``) plus newline, and two special
tokens: ``<|endoftext|>`` (end of sequence and padding) and ``<unk>`` (any other character).
Built with the ``tokenizers`` library and wrapped as a ``PreTrainedTokenizerFast``, so it saves
with ``save_pretrained`` and loads with ``AutoTokenizer.from_pretrained``. Decoding concatenates
the characters back, so ``decode(encode(text)) == text`` for any printable-ASCII text.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

__all__ = ["EOS_TOKEN", "UNK_TOKEN", "CHARACTERS", "build_tokenizer"]

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
CHARACTERS = "\n" + "".join(chr(code) for code in range(32, 127))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer: ids 0 and 1 are ``<|endoftext|>`` and ``<unk>``, then one id per character."""
    vocab = {EOS_TOKEN: 0, UNK_TOKEN: 1}
    vocab.update({char: index + 2 for index, char in enumerate(CHARACTERS)})
    # BPE without merges splits any string into single characters; no pre-tokenizer or
    # normalizer, so spaces and newlines are ordinary tokens, and Fuse() joins them back.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.decoder = decoders.Fuse()
    core.add_special_tokens([EOS_TOKEN, UNK_TOKEN])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
