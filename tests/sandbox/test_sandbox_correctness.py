"""Snippets give the same results as `python -c`; batches keep their order."""

from __future__ import annotations

import subprocess

import pytest


def python_c(config, code: str) -> subprocess.CompletedProcess:
    """The reference: the sandbox runtime's own `python -I -c` (no PYTHON* env), outside any jail."""
    return subprocess.run([config.resolved_runtime_python, "-I", "-c", code], capture_output=True, text=True, timeout=60)


def test_print(pool):
    r = pool.execute("print(6*7)")
    assert r.ok and r.stdout == "42\n" and r.stderr == "" and r.exit_code == 0 and r.signal is None
    assert r.stdout_bytes == 3 and not r.stdout_truncated and r.duration_s > 0


def test_sympy(pool):
    r = pool.execute("import sympy; print(sympy.factorint(2**64 - 1))")
    assert r.stdout == "{3: 1, 5: 1, 17: 1, 257: 1, 641: 1, 65537: 1, 6700417: 1}\n"
    r = pool.execute("import sympy as sp; x = sp.symbols('x'); print(sp.integrate(x**2, (x, 0, 3)), sp.solve(x**2 - 4, x))")
    assert r.stdout == "9 [-2, 2]\n"


def test_numpy(pool):
    r = pool.execute("import numpy as np; print(round(float(np.linalg.det(np.array([[1., 2.], [3., 4.]]))), 6))")
    assert r.stdout == "-2.0\n"


@pytest.mark.parametrize("code", [
    "print(",                              # syntax error
    "x = 1\ny = 0\nprint(x / y)",          # runtime error with a traceback
    "def f(n):\n    return f(n + 1)\nf(0)",  # RecursionError
    "import sys; print('out'); sys.exit('bye')",
    "import sys; sys.exit(3)",
    "raise SystemExit",
    "import os; print('lost', end=''); os._exit(5)",
])
def test_errors_and_exit_codes_match_python_c(pool, test_config, code):
    expected = python_c(test_config, code)
    r = pool.execute(code)
    assert (r.exit_code, r.stdout, r.stderr) == (expected.returncode, expected.stdout, expected.stderr)


def test_unicode_and_separate_streams(pool):
    r = pool.execute("import sys; print('∑ π ≈ 3.14'); print('warn', file=sys.stderr); print(b'\\xff'.decode('latin-1'))")
    assert r.stdout == "∑ π ≈ 3.14\nÿ\n" and r.stderr == "warn\n"
    assert r.stdout_bytes == len(r.stdout.encode())


def test_random_state_differs_between_snippets(pool):
    results = pool.execute_batch(["import random, numpy; print(random.random(), numpy.random.rand())"] * 6)
    assert len({r.stdout for r in results}) == 6


def test_globals_do_not_persist(pool):
    pool.execute_batch(["leaked = 1; import math; math.pi = 3"] * 4)
    r = pool.execute("import math; print('leaked' in globals(), math.pi, __name__)")
    assert r.stdout == "False 3.141592653589793 __main__\n"


def test_oversized_snippet_is_refused(pool, test_config):
    r = pool.execute("#" * (test_config.max_code_bytes + 1))
    assert r.error and "max_code_bytes" in r.error and not r.ok


def test_batch_of_200_mixed_snippets_keeps_input_order(pool):
    kinds = [
        "print({i})",
        "import sympy; print(sympy.Integer({i}) + 0)",
        "import numpy as np; print(int(np.arange({i} + 1).sum() - np.arange({i}).sum()))",
        "import time; time.sleep(0.01); print({i})",
        "import sys; print({i}); sys.exit({i} % 7)",
        "print({i}); 1/0",
    ]
    codes = [kinds[i % len(kinds)].format(i=i) for i in range(200)]
    results = pool.execute_batch(codes)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(200)]
    assert [r.exit_code for r in results] == [
        (i % 7 if i % len(kinds) == 4 else 1 if i % len(kinds) == 5 else 0) for i in range(200)
    ]
    assert all(r.error is None for r in results)
