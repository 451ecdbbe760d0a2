"""A character-level tokenizer for the tiny CPU model.

One token per character of printable ASCII (space to ``~``) plus newline, and two special
tokens: ``<|endoftext|>`` (end of sequence and padding) and ``<unk>`` (any other character).
Built with the ``tokenizers`` library and wrapped as a ``PreTrainedTokenizerFast``, so it saves
with ``save_pretrained``. Decoding concatenates the characters back, so
``decode(encode(text)) == text`` for any printable-ASCII text.

It is a *byte-level* BPE without merges (GPT-2/Qwen's byte-to-unicode alphabet: a space is
stored as ``Ġ``, a newline as ``Ċ``). transformers 5.x loads any ``qwen2`` model folder's
tokenizer as ``Qwen2Tokenizer`` whatever the saved ``tokenizer_class``, and that class assumes
exactly this byte-level scheme; a plain character vocabulary would lose every space and newline
there (and in vLLM, which loads tokenizers the same way). In this form ``AutoTokenizer`` gives
the same ids as the tokenizer built here.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

__all__ = ["EOS_TOKEN", "UNK_TOKEN", "CHARACTERS", "build_tokenizer"]

EOS_TOKEN = "<|endoftext|>"
UNK_TOKEN = "<unk>"
CHARACTERS = "\n" + "".join(chr(code) for code in range(32, 127))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The character-level tokenizer: ids 0 and 1 are ``<|endoftext|>`` and ``<unk>``, then one id per character."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    vocab = {EOS_TOKEN: 0, UNK_TOKEN: 1}
    vocab.update({byte_level.pre_tokenize_str(char)[0][0]: index + 2 for index, char in enumerate(CHARACTERS)})
    # BPE without merges splits any string into single (byte-level) characters.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.pre_tokenizer = byte_level
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([EOS_TOKEN, UNK_TOKEN])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
