"""Table of answers that real model outputs produce, graded against gold answers."""

import pytest

from torl_rllib.tasks import grade

# (gold, response): the response must be graded correct.
EQUIVALENT = [
    # fractions
    (r"\frac{14}{3}", r"\boxed{\frac{14}{3}}"),
    (r"\frac{14}{3}", r"\boxed{\dfrac{14}{3}}"),
    (r"\frac{14}{3}", r"\boxed{\tfrac{14}{3}}"),
    (r"\frac{14}{3}", r"\boxed{14/3}"),
    (r"\frac{14}{3}", r"\boxed{4\frac{2}{3}}"),
    (r"4\frac23", r"\boxed{\frac{14}{3}}"),
    (r"\frac{1}{2}", r"\boxed{0.5}"),
    ("0.5", r"\boxed{\frac12}"),
    (r"-\frac{1}{2}", r"\boxed{-0.5}"),
    (r"\frac{3}{56}", r"\boxed{\frac{6}{112}}"),
    (r"\frac{1}{3}", r"\boxed{0.333333}"),
    # radicals
    (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"),
    (r"\frac{\sqrt{3}}{2}", r"\boxed{\frac{1}{2}\sqrt{3}}"),
    (r"3\sqrt{13}", r"\boxed{\sqrt{117}}"),
    (r"\frac{\sqrt{2}}{2}", r"\boxed{\sqrt2/2}"),
    (r"\frac{\sqrt{3}}{2}", r"\boxed{sqrt(3)/2}"),  # Python syntax after a tool call
    # pi
    (r"12\pi", r"\boxed{12\pi}"),
    (r"12\pi", r"\boxed{\pi \cdot 12}"),
    (r"\frac{\pi}{4}", r"\boxed{pi/4}"),
    (r"\pi", r"The area is $\boxed{\pi}$."),
    # degrees
    (r"90^\circ", r"\boxed{90}"),
    ("30", r"\boxed{30^{\circ}}"),
    ("30", r"\boxed{30^\circ}"),
    # percentages
    (r"50\%", r"\boxed{50}"),
    ("50", r"\boxed{50\%}"),
    (r"50\%", r"\boxed{50 \%}"),
    # units, currency and words in \text{}
    ("10", r"\boxed{10\text{ cm}}"),
    (r"10\text{ cm}", r"\boxed{10}"),
    ("10", r"\boxed{10 \mbox{ meters}}"),
    ("5", r"\boxed{5\text{ dollars}}"),
    (r"\$18.90", r"\boxed{18.90}"),
    ("18.90", r"\boxed{\$18.9}"),
    (r"\text{Evelyn}", r"\boxed{\text{Evelyn}}"),
    (r"\text{Monday}", r"\boxed{\text{monday}}"),
    # intervals and sets
    ("[1,3)", r"\boxed{[1, 3)}"),
    (r"(-\infty, 2]", r"\boxed{(-\infty,2]}"),
    (r"\{1,2,3\}", r"\boxed{\{3,2,1\}}"),
    ("1,2,3", r"\boxed{3, 2, 1}"),
    ("1,-2", r"\boxed{-2, 1}"),
    (r"\{1,-2\}", r"\boxed{1,-2}"),
    # tuples and coordinates
    ("(1,2)", r"\boxed{(1, 2)}"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \pi/2)}"),
    ("(3,-1)", r"\boxed{\left(3,-1\right)}"),
    # equations
    ("5", r"\boxed{x=5}"),
    ("x=5", r"\boxed{5}"),
    ("y=2x+3", r"\boxed{y = 2x + 3}"),
    ("y=2x+3", r"\boxed{2x+3}"),
    # scientific notation
    ("1500", r"\boxed{1.5\times10^{3}}"),
    (r"1.5 \times 10^3", r"\boxed{1500}"),
    (r"3\times10^{-4}", r"\boxed{0.0003}"),
    # thousands separators
    ("10000", r"\boxed{10,000}"),
    ("10000", r"\boxed{10{,}000}"),
    ("1000000", r"\boxed{1,000,000}"),
    # negative numbers
    ("-50", r"\boxed{-50}"),
    ("-3", r"\boxed{- 3}"),
    ("-4", r"\boxed{(-4)}"),
    # matrices and vectors
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\boxed{\begin{bmatrix}1&2\\3&4\end{bmatrix}}"),
    (r"\begin{pmatrix} -1 \\ 2 \end{pmatrix}", r"\boxed{\begin{pmatrix}-1\\2\end{pmatrix}}"),
    # plus/minus
    (r"\pm 2", r"\boxed{\pm2}"),
    ("2, -2", r"\boxed{\pm 2}"),
    (r"\pm 2", r"\boxed{-2, 2}"),
    # multiple choice letters
    ("A", r"\boxed{\text{(A)}}"),
    ("(A)", r"\boxed{A}"),
    ("B", r"\boxed{\textbf{(B)}}"),
    (r"\text{(D)}", r"\boxed{D}"),
    # numbers as benchmarks store them
    ("27.0", r"\boxed{27}"),
    (27.0, r"\boxed{27}"),
    ("27", r"\boxed{27.0}"),
    ("025", r"\boxed{25}"),
    ("73", r"\boxed{\textbf{(073)}}"),
    ("104", r"\boxed{104.}"),
    ("127", r"\boxed{\mathbf{127} }"),
    # complex numbers and expressions
    ("1+2i", r"\boxed{1 + 2i}"),
    ("6 - 5i", r"\boxed{6-5i}"),
    ("p - q", r"\boxed{p-q}"),
    ("8n^2 + 4n + 1", r"\boxed{8n^2+4n+1}"),
    ("x^2+2x+1", r"\boxed{(x+1)^2}"),
    ("1024", r"\boxed{2**10}"),
    ("n^2+1", r"\boxed{n**2 + 1}"),
    ("2^N", r"\boxed{2**N}"),
    ("e^2", r"\boxed{exp(2)}"),
    ("3", r"\boxed{\log_2 8}"),
    (r"\infty", r"\boxed{\infty}"),
    # whole responses and box variants
    ("204", "Let me compute.\n```python\nprint(204)\n```\n```output\n204\n```\nSo she takes $\\boxed{204}$ minutes."),
    ("3", r"I first thought \boxed{2}, but rechecking gives \boxed{3}."),
    ("5", r"The answer is \boxed 5"),
    ("7", r"\fbox{7}"),
    ("204", r"$\framebox{204}$"),
    (r"\frac{14}{3}", r"a solution whose gold is boxed: \boxed{\frac{14}{3}}"),
]

# (gold, response): the response must be graded incorrect.
NOT_EQUIVALENT = [
    (r"\frac{14}{3}", r"\boxed{\frac{3}{14}}"),
    (r"\frac{14}{3}", r"\boxed{4.6}"),
    (r"\frac{1}{3}", r"\boxed{0.3}"),
    (r"\frac12", r"\boxed{0.51}"),
    (r"2\sqrt2", r"\boxed{\sqrt{2}}"),
    (r"\sqrt{3}", r"\boxed{1.732}"),
    (r"12\pi", r"\boxed{12}"),
    ("12", r"\boxed{12\pi}"),
    ("30", r"\boxed{31}"),
    (r"50\%", r"\boxed{5}"),
    ("x=5", r"\boxed{x=6}"),
    ("x=5", r"\boxed{6}"),
    ("[1,3)", r"\boxed{(1,3)}"),
    ("[1,3]", r"\boxed{[1,3)}"),
    (r"(2,\infty)", r"\boxed{[2,\infty)}"),
    (r"\{1,2\}", r"\boxed{\{1,2,3\}}"),
    ("1,2,3", r"\boxed{1,2}"),
    ("(1,2)", r"\boxed{(2,1)}"),
    ("1500", r"\boxed{1.5\times10^2}"),
    ("10000", r"\boxed{1000}"),
    ("-3", r"\boxed{3}"),
    ("3", r"\boxed{-3}"),
    (r"\pm 2", r"\boxed{2}"),
    ("2", r"\boxed{\pm 2}"),
    ("A", r"\boxed{B}"),
    (r"\text{(A)}", r"\boxed{\text{(C)}}"),
    (r"\begin{pmatrix}1\\2\end{pmatrix}", r"\boxed{\begin{pmatrix}2\\1\end{pmatrix}}"),
    ("1+2i", r"\boxed{1-2i}"),
    ("p - q", r"\boxed{q-p}"),
    ("x^2+1", r"\boxed{x^2-1}"),
    (r"\infty", r"\boxed{-\infty}"),
    (r"\text{Monday}", r"\boxed{\text{Tuesday}}"),
    ("27", r"\boxed{27.5}"),
    ("204", r"\boxed{240}"),
    ("2", r"\boxed{2x}"),
    ("2^M", r"\boxed{2**N}"),
    ("1024", r"\boxed{2**11}"),
    ("0", r"\boxed{\emptyset}"),
    ("3", r"\boxed{3} was my guess, but it is \boxed{4}"),
    ("204", "The answer is 204."),  # no box: never rewarded
    ("5", r"\boxed{5"),  # cut off inside the box
]


def test_table_is_large_enough():
    assert len(EQUIVALENT) >= 60 and len(NOT_EQUIVALENT) >= 30


@pytest.mark.parametrize(("gold", "response"), EQUIVALENT)
def test_equivalent(gold, response):
    result = grade(response, gold)
    assert result.correct, result
    assert result.reason == "match"


@pytest.mark.parametrize(("gold", "response"), NOT_EQUIVALENT)
def test_not_equivalent(gold, response):
    result = grade(response, gold)
    assert not result.correct, result
    assert result.reason in ("mismatch", "no_box"), result
