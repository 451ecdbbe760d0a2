"""Prompt templates, selectable by name.

``tir_base_0309`` is ToRL's base-model template, verbatim; ``no_tool_base`` is the same
conversation without the invitation to write programs (the RL-without-tools baseline);
``chat`` renders the problem through the tokenizer's own chat template (instruct models).
Add a template with :func:`register_template` without touching the loader.
"""

from __future__ import annotations

from typing import Callable, Protocol

__all__ = ["PromptTemplate", "register_template", "render_prompt", "template_names"]

PLACEHOLDER = "{problem}"


class PromptTemplate(Protocol):
    def __call__(self, problem: str, tokenizer=None) -> str: ...


TIR_BASE_0309 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "User: Please integrate natural language reasoning with programs to solve the problem above, "
    "and put your final answer within \\boxed{}.\n"
    "{problem}\n"
    "Assistant:"
)

NO_TOOL_BASE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it.\n"
    "User: Please reason step by step, and put your final answer within \\boxed{}.\n"
    "{problem}\n"
    "Assistant:"
)

CHAT_INSTRUCTION = (
    "Please integrate natural language reasoning with programs to solve the problem, "
    "and put your final answer within \\boxed{}."
)


def _format_template(text: str) -> PromptTemplate:
    # A plain substitution, not str.format: templates contain LaTeX braces such as \boxed{}.
    def render(problem: str, tokenizer=None) -> str:
        return text.replace(PLACEHOLDER, problem)

    return render


def _chat_template(problem: str, tokenizer=None) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "template 'chat' needs a tokenizer with a chat template; "
            "use 'tir_base_0309' for base models"
        )
    messages = [{"role": "user", "content": f"{problem}\n\n{CHAT_INSTRUCTION}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_TEMPLATES: dict[str, PromptTemplate] = {
    "tir_base_0309": _format_template(TIR_BASE_0309),
    "no_tool_base": _format_template(NO_TOOL_BASE),
    "chat": _chat_template,
}


def register_template(name: str, template: str | Callable[..., str], overwrite: bool = False) -> None:
    """Register a template: text with a ``{problem}`` placeholder or a callable ``(problem, tokenizer)``.

    Other braces in the text are literal (``\\boxed{}`` needs no escaping).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"template name must be a non-empty string, got {name!r}")
    if name in _TEMPLATES and not overwrite:
        raise ValueError(f"prompt template {name!r} already exists; pass overwrite=True to replace it")
    if isinstance(template, str):
        if PLACEHOLDER not in template:
            raise ValueError(f"template {name!r} must contain the placeholder {PLACEHOLDER}")
        template = _format_template(template)
    elif not callable(template):
        raise TypeError(f"template {name!r} must be a string or a callable, got {type(template).__name__}")
    _TEMPLATES[name] = template


def template_names() -> list[str]:
    return sorted(_TEMPLATES)


def render_prompt(name: str, problem: str, tokenizer=None) -> str:
    """Render ``problem`` with the template registered as ``name``."""
    try:
        template = _TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; choose one of {template_names()}") from None
    return template(problem, tokenizer)
