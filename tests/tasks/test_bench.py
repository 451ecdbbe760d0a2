from benchmarks import grading as bench  # benchmarks/grading.py

from .conftest import benchmark_file


def test_bench_prints_responses_per_second(capsys):
    data = benchmark_file("math500.jsonl")
    rate = bench.main(["--n", "64", "--workers", "1", "--data", str(data)])
    out = capsys.readouterr().out
    assert rate > 0
    assert "graded 64 responses in" in out and "responses/s" in out and "match" in out


def test_bench_batch_is_deterministic_and_mixed():
    data = benchmark_file("math500.jsonl")
    responses, golds = bench.make_batch(data, 200)
    assert (responses, golds) == bench.make_batch(data, 200)
    assert len(responses) == len(golds) == 200
    assert any("\\boxed" not in response for response in responses)
