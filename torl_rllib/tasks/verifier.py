"""Compare an extracted answer with a gold answer using math-verify (and sympy for Python syntax).

This module does the unbounded work: math-verify's own signal-based timeouts are disabled, so
call :func:`compare` only inside a process that can be killed (see :mod:`.verifier_pool`).
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

__all__ = ["compare"]

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())

# Answers written as Python (after a tool call, e.g. ``pi/4``, ``2**10``, ``sqrt(3)/2``) are
# misread as LaTeX (``pi`` -> p*i), so they go to sympy. Only these names may appear besides
# one-letter symbols, and dots only inside numbers: sympy's parser evaluates the text.
_PYTHON_NAMES = frozenset({"pi", "sqrt", "exp", "log", "sin", "cos", "tan", "oo"})
_PYTHON_CHARS = re.compile(r"[A-Za-z0-9_\s+\-*/^().]+")
_NAME = re.compile(r"[A-Za-z_]\w*")
_WHITESPACE = re.compile(r"\s+")
_STRAY_DOT = re.compile(r"(?<!\d)\.|\.(?!\d)")
# Leading zeros of a number that starts the text or follows an opening bracket or a sign (not
# a digit group after a thousands separator: 10,000 or 10{,}000).
_LEADING_ZEROS = re.compile(r"(?:^|(?<=[(\[{=+\-]))0+(?=\d)")


def compare(answer: str, gold: str) -> tuple[str, str | None]:
    """Return ``(verdict, parsed_gold)``; verdict is ``"match"``, ``"mismatch"`` or ``"parse_error"``."""
    answer, gold = _normalize(answer), _normalize(gold)
    parsed_gold = _parse(gold)
    if not parsed_gold:
        return "parse_error", None
    gold_text = str(parsed_gold[0])
    if _WHITESPACE.sub("", answer) == _WHITESPACE.sub("", gold):
        return "match", gold_text  # the common correct case, without parsing or comparing
    parsed_answer = _parse(answer)
    if not parsed_answer:
        return "parse_error", gold_text
    matched = verify(parsed_gold, parsed_answer, timeout_seconds=None)
    return ("match" if matched else "mismatch"), gold_text


def _normalize(text: str) -> str:
    """Drop a sentence's final period (``104.``) and integers' leading zeros (AIME's ``073``).

    math-verify reads ``\\text{073}`` as a symbol named 073, never equal to 73.
    """
    text = text.strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1]
    return _LEADING_ZEROS.sub("", text)


def _parse(text: str) -> list:
    # verify() wants a list; the cached tuple keeps the shared parse from being mutated.
    return list(_parse_cached(text))


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> tuple:
    # Answers repeat within a rollout group and golds across it; sympy objects are immutable.
    python_expr = _parse_python(text)
    if python_expr is not None:
        return (python_expr, text)
    return tuple(parse("\\boxed{" + text + "}", extraction_config=_EXTRACTION, parsing_timeout=None))


def _parse_python(text: str):
    """Parse ``text`` with sympy if it is a Python-syntax expression over known names, else None."""
    if "\\" in text or not _PYTHON_CHARS.fullmatch(text) or _STRAY_DOT.search(text):
        return None
    names = set(_NAME.findall(text))
    if any(len(name) > 1 and name not in _PYTHON_NAMES for name in names):
        return None
    if "**" not in text and not names & _PYTHON_NAMES:
        return None  # plain arithmetic like 14/3 or x^2: LaTeX parsing handles it
    from sympy import E, Symbol
    from sympy.parsing.sympy_parser import parse_expr

    # One-letter names as math-verify reads LaTeX (lower-case real symbols, i included; e is
    # Euler's number), which also keeps S, N, O, Q from meaning sympy objects.
    symbols = {name: Symbol(name.lower(), real=True) for name in names if len(name) == 1}
    symbols.update({"e": E, "E": E})
    try:
        return parse_expr(text, local_dict=symbols, evaluate=False)
    except Exception:  # noqa: BLE001 - any failure means "not a Python expression"
        logging.getLogger(__name__).debug("not a Python expression: %r", text, exc_info=True)
        return None
