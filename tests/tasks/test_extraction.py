import pytest

from torl_rllib.tasks import extract_boxed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{5}", "5"),
        (r"so the answer is $\boxed{\frac{14}{3}}$.", r"\frac{14}{3}"),
        (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}"),
        (r"first \boxed{1}, then \boxed{2}", "2"),
        (r"\boxed{1} and finally \fbox{7}", "7"),
        (r"\framebox{204} minutes", "204"),
        (r"\boxed 5", "5"),
        (r"the answer is \boxed 5.", "5"),
        (r"$\boxed -3$", "-3"),
        (r"\boxed {7}", "7"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces do not close the box
        (r"\boxed{\left\{ 1 \right\}}", r"\left\{ 1 \right\}"),
        (r"\boxed{\boxed{5}}", "5"),
        (r"\boxed{  x = 5  }", "x = 5"),
        (r"\boxed{3} then cut off \boxed{4", "3"),  # an unclosed box does not count
        (r"put it in \boxed{} ... \boxed{9}", "9"),
        (r"\boxed{9} and the instructions said \boxed{}", "9"),  # empty boxes are skipped
    ],
)
def test_extracts_last_box(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 5.",  # no last-number fallback
        "Final answer: 42",
        r"\boxed{}",
        r"\boxed{5",
        r"\boxedx{5}",  # a different command
        r"\textbf{5}",
        "",
        None,
        42,
    ],
)
def test_no_box(text):
    assert extract_boxed(text) is None


def test_linear_on_adversarial_input():
    import time

    texts = [r"\boxed{" * 20_000, r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_001, "{" * 50_000 + r"\boxed{8}"]
    start = time.perf_counter()
    results = [extract_boxed(text) for text in texts]
    assert time.perf_counter() - start < 1.0
    assert results[0] is None
    assert results[1] == "{" * 10_000 + "1" + "}" * 10_000
    assert results[2] == "8"
