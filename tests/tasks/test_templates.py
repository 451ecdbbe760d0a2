import re

import pytest

from torl_rllib.tasks import register_template, render_prompt, template_names
from torl_rllib.tasks import templates

from .conftest import BENCHMARKS

TIR_BASE_0309 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "User: Please integrate natural language reasoning with programs to solve the problem above, "
    "and put your final answer within \\boxed{}.\n"
    "What is $\\{x\\}$ if {problem} and {0}?\n"
    "Assistant:"
)


@pytest.fixture(autouse=True)
def private_registry(monkeypatch):
    monkeypatch.setattr(templates, "_TEMPLATES", dict(templates._TEMPLATES))


def test_tir_base_0309_is_verbatim_and_braces_in_problems_are_literal():
    assert render_prompt("tir_base_0309", "What is $\\{x\\}$ if {problem} and {0}?") == TIR_BASE_0309


def test_tir_base_0309_matches_the_design_notes():
    design = BENCHMARKS.parents[1] / "DESIGN.md"
    if not design.exists():
        pytest.skip(f"{design.resolve()} is absent (needs ../shared next to the repo)")
    block = re.search(r"`tir_base_0309`.*?\n```\n(.*?)\n```", design.read_text(), re.DOTALL).group(1)
    assert render_prompt("tir_base_0309", "PROBLEM") == block.replace("[PROMPT]", "PROBLEM")


def test_no_tool_variant_does_not_invite_programs():
    prompt = render_prompt("no_tool_base", "What is 2+2?")
    assert "program" not in prompt and "\\boxed{}" in prompt and prompt.endswith("What is 2+2?\nAssistant:")


class ChatTokenizer:
    chat_template = "{% for m in messages %}...{% endfor %}"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


def test_chat_template_uses_the_tokenizer():
    prompt = render_prompt("chat", "What is 2+2?", ChatTokenizer())
    assert prompt.startswith("<|user|>What is 2+2?\n\n") and "\\boxed{}" in prompt
    assert prompt.endswith("<|assistant|>")


def test_chat_template_needs_a_tokenizer_with_one():
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render_prompt("chat", "P")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render_prompt("chat", "P", object())


def test_register_text_and_callable_templates():
    register_template("short", "Q: {problem}\nA: \\boxed{}")
    register_template("upper", lambda problem, tokenizer=None: problem.upper())
    assert {"short", "upper", "tir_base_0309", "no_tool_base", "chat"} <= set(template_names())
    assert render_prompt("short", "2+2?") == "Q: 2+2?\nA: \\boxed{}"
    assert render_prompt("upper", "abc") == "ABC"


def test_register_rejects_mistakes():
    with pytest.raises(ValueError, match="must contain the placeholder {problem}"):
        register_template("bad", "no placeholder")
    with pytest.raises(ValueError, match="'tir_base_0309' already exists; pass overwrite=True"):
        register_template("tir_base_0309", "{problem}")
    with pytest.raises(TypeError, match="must be a string or a callable"):
        register_template("bad", 42)
    with pytest.raises(ValueError, match="template name must be a non-empty string"):
        register_template("", "{problem}")
    register_template("tir_base_0309", "X {problem}", overwrite=True)
    assert render_prompt("tir_base_0309", "P") == "X P"


def test_unknown_template_lists_the_choices():
    with pytest.raises(ValueError, match=r"unknown prompt template 'nope'; choose one of \['chat', 'no_tool_base'"):
        render_prompt("nope", "P")
