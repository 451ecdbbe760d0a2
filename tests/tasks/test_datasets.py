"""load_dataset: formats, column mappings, ids and sources, and every malformed-row case."""

import json
import logging
import math

import pytest

from torl_rllib.tasks import Dataset, DatasetSpec, Problem, RowError, load_dataset


def write_jsonl(path, rows):
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + "\n")
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


VERL_ROW = {
    "data_source": "aime24",
    "prompt": [{"role": "system", "content": "Reason step by step."}, {"role": "user", "content": "What is 2+2?"}],
    "ability": "math",
    "reward_model": {"ground_truth": "4", "style": "rule"},
    "extra_info": {"id": "q1", "split": "test"},
}


def test_benchmark_shapes_need_no_configuration(tmp_path):
    path = write_jsonl(
        tmp_path / "bench.jsonl",
        [
            {"problem": "P0", "answer": "5"},
            {"question": "P1", "answer": r"Work... so $\boxed{\frac{1}{2}}$. The answer is: \frac12"},
            {"question": "P2", "answer": 27.0, "id": 7},
            {"problem": "P3", "answer": 0.25, "url": "https://example.org"},
        ],
    )
    dataset = load_dataset(path)
    assert isinstance(dataset, Dataset) and len(dataset) == 4 and dataset.num_skipped == 0
    assert dataset.path == str(path)
    assert [p.answer for p in dataset] == ["5", r"\frac{1}{2}", "27", "0.25"]
    assert [p.id for p in dataset] == ["bench/0", "bench/1", "bench/7", "bench/3"]
    assert {p.source for p in dataset} == {"bench"}
    assert dataset[3] == Problem("bench/3", "bench", "P3", "0.25", {"url": "https://example.org"})


def test_verl_parquet_shape(tmp_path):
    rows = [VERL_ROW, VERL_ROW, {**VERL_ROW, "data_source": "math500", "extra_info": {"id": "q2", "split": "test"}}]
    dataset = load_dataset(write_parquet(tmp_path / "train.parquet", rows))
    assert [(p.id, p.source, p.problem, p.answer) for p in dataset] == [
        ("aime24/q1", "aime24", "What is 2+2?", "4"),
        ("aime24/q1#1", "aime24", "What is 2+2?", "4"),  # repeats get a suffix, ids stay unique
        ("math500/q2", "math500", "What is 2+2?", "4"),
    ]
    assert dataset[0].metadata == {"data_source": "aime24", "ability": "math", "extra_info": {"id": "q1", "split": "test"}}


def test_column_mapping_with_nested_fields(tmp_path):
    rows = [{"q": "Find x.", "meta": {"gold": "x=3", "uid": "a"}}, {"q": "Find y.", "meta": {"gold": "2", "uid": "b"}}]
    for path in (write_parquet(tmp_path / "custom.parquet", rows), write_jsonl(tmp_path / "custom.jsonl", rows)):
        spec = DatasetSpec(path=path, problem_field="q", answer_field="meta.gold", id_field="meta.uid", source="mine")
        dataset = load_dataset(spec)
        assert [(p.id, p.source, p.problem, p.answer) for p in dataset] == [
            ("mine/a", "mine", "Find x.", "x=3"),
            ("mine/b", "mine", "Find y.", "2"),
        ]


def test_spec_as_a_dict(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"q": "P", "a": "1"}])
    assert load_dataset({"path": str(path), "problem_field": "q", "answer_field": "a"})[0].answer == "1"
    with pytest.raises(ValueError, match=r"unknown dataset option\(s\) \['answer_column'\]"):
        load_dataset({"path": str(path), "answer_column": "a"})


def test_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"problem": "P", "answer": "1"}, ["not", "an", "object"]]))
    dataset = load_dataset(path)
    assert len(dataset) == 1
    assert dataset.errors == [RowError(str(path), 1, "expected a JSON object, got list")]


def test_json_that_is_not_an_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"problem": "P", "answer": "1"}))
    with pytest.raises(ValueError, match="expected a JSON array of objects, got dict"):
        load_dataset(path)


def test_hf_disk_dataset_and_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"problem": "P0", "answer": "1"}, {"problem": "P1", "answer": "2"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "single"))
    assert [p.answer for p in load_dataset(tmp_path / "single")] == ["1", "2"]

    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
    ).save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(ValueError, match=r"holds splits \['test', 'train'\]; set DatasetSpec.split"):
        load_dataset(tmp_path / "dict")
    assert len(load_dataset(DatasetSpec(path=tmp_path / "dict", split="test"))) == 1
    with pytest.raises(ValueError, match="without splits"):
        load_dataset(DatasetSpec(path=tmp_path / "single", split="train"))


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write_jsonl(tmp_path / "data.txt", [{"problem": "P", "answer": "1"}])
    with pytest.raises(ValueError, match="cannot tell the format .* suffix '.txt'"):
        load_dataset(path)
    assert len(load_dataset(DatasetSpec(path=path, format="jsonl"))) == 1


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="dataset not found: /no/such/file.jsonl"):
        load_dataset("/no/such/file.jsonl")


def test_unreadable_files(tmp_path):
    parquet = tmp_path / "broken.parquet"
    parquet.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="broken.parquet is not a readable parquet file"):
        load_dataset(parquet)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="binary.jsonl is not UTF-8 text"):
        load_dataset(binary)


# (row written to line i of a JSONL file, the reason reported for it)
MALFORMED = [
    ("{not json", "invalid JSON: "),
    ("[1, 2]", "expected a JSON object, got list"),
    ({"answer": "1"}, "missing problem (no non-null fields 'problem', 'question', 'prompt')"),
    ({"problem": None, "answer": "1"}, "missing problem (no non-null fields 'problem', 'question', 'prompt')"),
    ({"problem": "P"}, "missing answer (no non-null fields 'reward_model.ground_truth', 'answer'"),
    ({"problem": "P", "answer": "  "}, "empty answer in field 'answer'"),
    ({"problem": "   ", "answer": "1"}, "empty problem in field 'problem'"),
    ({"problem": 12, "answer": "1"}, "problem field 'problem' has type int; expected a string or a chat message list"),
    ({"problem": "P", "answer": []}, "answer field 'answer' has type list; expected a string, a number or a list"),
    ({"problem": "P", "answer": [{"v": 1}]}, "answer field 'answer' has type dict; expected a string, a number or a list"),
    ({"problem": "P", "answer": True}, "answer field 'answer' has type bool"),
    ({"problem": "P", "answer": {"value": 1}}, "answer field 'answer' has type dict"),
    ({"problem": "P", "answer": r"so \boxed{5"}, "answer in field 'answer' has a \\boxed but no complete, non-empty box"),
    ({"prompt": [{"role": "system", "content": "hi"}], "answer": "1"}, "problem field 'prompt' is a list without a user message"),
    ({"problem": "P", "answer": "1", "id": [1]}, "id field 'id' has type list; expected a string or an integer"),
]


@pytest.mark.parametrize(("answer", "gold"), [
    (["$\\frac{1}{2}$"], "\\frac{1}{2}"),  # OlympiadBench: a list of one, in math mode
    (["3", "-3"], "3, -3"),  # several answers
    (27.0, "27"), (2.5, "2.5"), ("$5", "$5"),
    ("so \\boxed{\\frac{14}{3}}.\nThe answer is: \\frac{14}{3}", "\\frac{14}{3}"),
])
def test_answer_shapes_become_one_gold_string(tmp_path, answer, gold):
    (problem,) = load_dataset(write_jsonl(tmp_path / "a.jsonl", [{"problem": "P", "answer": answer}]))
    assert problem.answer == gold


@pytest.mark.parametrize(("row", "reason"), MALFORMED)
def test_each_malformed_row_is_reported_with_file_row_and_reason(tmp_path, caplog, row, reason):
    good = {"problem": "fine", "answer": "1"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [good, good, row, good])
    with caplog.at_level(logging.WARNING, logger="torl_rllib.tasks.datasets"):
        dataset = load_dataset(path)
    assert len(dataset) == 3 and dataset.num_skipped == 1
    (error,) = dataset.errors
    assert (error.file, error.row) == (str(path), 2)
    assert error.reason.startswith(reason), error.reason
    assert f"{path}: skipped 1 malformed rows; first: row 2: {error.reason}" in caplog.text

    with pytest.raises(ValueError) as raised:
        load_dataset(DatasetSpec(path=path, on_error="raise"))
    assert str(raised.value) == f"{path}: row 2: {error.reason}"


def test_non_finite_answers_are_malformed(tmp_path):
    path = write_parquet(tmp_path / "nan.parquet", [{"problem": "P", "answer": math.nan}, {"problem": "Q", "answer": 2.0}])
    dataset = load_dataset(path)
    assert [p.answer for p in dataset] == ["2"]
    assert dataset.errors == [RowError(str(path), 0, "answer in field 'answer' is not a finite number: nan")]


def test_explicitly_named_fields_must_exist(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "P", "gold": "1"}, {"problem": "P", "answer": "2", "uid": "x"}])
    dataset = load_dataset(DatasetSpec(path=path, answer_field="gold"))
    assert [p.answer for p in dataset] == ["1"]
    assert dataset.errors == [RowError(str(path), 1, "missing answer (no non-null field 'gold')")]
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "P", "answer": "1"}, {"problem": "P", "answer": "2", "uid": "x"}])
    dataset = load_dataset(DatasetSpec(path=path, id_field="uid"))
    assert [p.id for p in dataset] == ["d/x"]
    assert dataset.errors == [RowError(str(path), 0, "missing id (no non-null field 'uid')")]


def test_blank_lines_are_not_rows_and_rows_are_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"problem": "P", "answer": "1"}\n\n{"problem": "P"}\n')
    dataset = load_dataset(path)
    assert dataset.errors[0].row == 2


def test_zero_usable_rows_is_an_error_naming_the_file(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "P"}, {"answer": "1"}])
    with pytest.raises(ValueError, match=rf"dataset {path} has no usable rows \(2 malformed rows, first: {path}: row 0: missing answer"):
        load_dataset(path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match=rf"dataset {empty} has no usable rows \(the file has no rows\)"):
        load_dataset(empty)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": ""}, "DatasetSpec.path must be a non-empty path"),
        ({"path": 3}, "DatasetSpec.path must be a non-empty path"),
        ({"path": "x", "format": "csv"}, "DatasetSpec.format must be one of"),
        ({"path": "x", "on_error": "ignore"}, "DatasetSpec.on_error must be one of"),
        ({"path": "x", "problem_field": ""}, "DatasetSpec.problem_field must be a non-empty string or None"),
        ({"path": "x", "source": 5}, "DatasetSpec.source must be a non-empty string or None"),
    ],
)
def test_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DatasetSpec(**kwargs)


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"problem": "a\u2028b", "answer": "1"}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert load_dataset(path)[0].problem == "a\u2028b"
