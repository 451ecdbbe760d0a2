import string

import pytest
from transformers import AutoTokenizer

from tools.tiny.tokenizer import CHARACTERS, EOS_TOKEN, build_tokenizer

TEXTS = [
    "",
    " ",
    "  two  spaces \n\n newline",
    "\\boxed{12} \\frac{a}{b} {{}}",
    "```python\nprint(47 * 83)\n```\n```output\n3901\n```\n",
    string.printable.replace("\t", "").replace("\r", "").replace("\x0b", "").replace("\x0c", ""),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_is_exact(tokenizer, text):
    ids = tokenizer.encode(text)
    assert len(ids) == len(text)  # one token per character
    assert tokenizer.decode(ids) == text


def test_every_character_has_its_own_id(tokenizer):
    ids = [tokenizer.encode(char) for char in CHARACTERS]
    assert all(len(one) == 1 for one in ids)
    assert len({one[0] for one in ids}) == len(CHARACTERS)
    assert tokenizer.unk_token_id not in {one[0] for one in ids}


def test_special_tokens(tokenizer):
    assert tokenizer.eos_token == tokenizer.pad_token == EOS_TOKEN
    assert tokenizer.eos_token_id == tokenizer.pad_token_id == 0
    assert len(tokenizer) == len(CHARACTERS) + 2
    ids = tokenizer.encode(f"7{EOS_TOKEN}")
    assert ids[-1] == tokenizer.eos_token_id and len(ids) == 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == "7"
    assert tokenizer.encode("\t") == [tokenizer.unk_token_id]


def test_save_and_auto_load(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        assert loaded.encode(text) == tokenizer.encode(text)
        assert loaded.decode(loaded.encode(text)) == text
    assert loaded.eos_token_id == tokenizer.eos_token_id
