"""Load math problems with gold answers from parquet, JSONL, JSON or a saved Hugging Face dataset.

Understood without configuration: the verl/ToRL parquet shape (``prompt`` as a chat list,
``reward_model.ground_truth``, ``data_source``, ``extra_info.id``) and the common benchmark
shapes (``problem`` or ``question``; ``answer``, which may be a worked solution whose last
``\\boxed{}`` is the gold answer, a float like ``27.0``, or a list of answers). Other files
name their columns in :class:`DatasetSpec` (dotted paths reach nested fields). Malformed rows are reported as :class:`RowError` and
skipped, or raise, as the spec says.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from torl_rllib.tasks.extraction import extract_boxed

__all__ = ["Dataset", "DatasetSpec", "Problem", "RowError", "load_dataset"]

logger = logging.getLogger(__name__)

FORMATS = ("auto", "parquet", "jsonl", "json", "hf_disk")
ON_ERROR = ("skip", "raise")
_SUFFIX_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
PROBLEM_FIELDS = ("problem", "question", "prompt")
ANSWER_FIELDS = ("reward_model.ground_truth", "answer", "ground_truth", "final_answer")
ID_FIELDS = ("extra_info.id", "extra_info.index", "id", "unique_id", "idx")
SOURCE_FIELD = "data_source"
_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")


@dataclass(frozen=True)
class Problem:
    """A problem and its gold answer. ``id`` is unique in its dataset and stable across loads."""

    id: str
    source: str
    problem: str
    answer: str
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RowError:
    """A malformed row: the file, its 0-based row (line for JSONL) and what is wrong with it."""

    file: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: row {self.row}: {self.reason}"


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset is and how to read it.

    ``format``: ``auto`` (from the suffix; a directory is a saved HF dataset), ``parquet``,
    ``jsonl``, ``json`` (an array of objects) or ``hf_disk`` (``datasets.save_to_disk``).
    ``problem_field`` / ``answer_field`` / ``id_field``: column names, dotted for nested fields;
    None tries the usual names (``PROBLEM_FIELDS``, ``ANSWER_FIELDS``, ``ID_FIELDS``; without an
    id the row number is used). ``source``: the name every record carries; None uses the row's
    ``data_source`` or else the file name. ``split``: which split of a saved ``DatasetDict``.
    ``on_error``: ``skip`` malformed rows (logged, counted in ``Dataset.errors``) or ``raise``.
    """

    path: str | Path
    format: str = "auto"
    problem_field: str | None = None
    answer_field: str | None = None
    id_field: str | None = None
    source: str | None = None
    split: str | None = None
    on_error: str = "skip"

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, Path)) or not str(self.path):
            raise ValueError(f"DatasetSpec.path must be a non-empty path, got {self.path!r}")
        if self.format not in FORMATS:
            raise ValueError(f"DatasetSpec.format must be one of {FORMATS}, got {self.format!r}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"DatasetSpec.on_error must be one of {ON_ERROR}, got {self.on_error!r}")
        for name in ("problem_field", "answer_field", "id_field", "source", "split"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"DatasetSpec.{name} must be a non-empty string or None, got {value!r}")


@dataclass
class Dataset:
    """The usable problems of one file, and the rows that were skipped."""

    path: str
    problems: list[Problem]
    errors: list[RowError]

    @property
    def num_skipped(self) -> int:
        return len(self.errors)

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]


class _Malformed(Exception):
    """Why one row cannot be used."""


def load_dataset(spec: DatasetSpec | Mapping[str, Any] | str | Path) -> Dataset:
    """Load every usable problem of ``spec`` (a spec, its fields as a dict, or just a path).

    Raises FileNotFoundError for a missing path, ValueError for an unreadable file, a malformed
    row under ``on_error="raise"``, or a file without any usable row.
    """
    spec = _as_spec(spec)
    path = Path(spec.path)
    if not path.exists():
        raise FileNotFoundError(f"dataset not found: {path}")
    file = str(path)
    problems: list[Problem] = []
    errors: list[RowError] = []
    id_counts: Counter[str] = Counter()
    for row, record in _read_records(path, _resolve_format(path, spec.format), spec.split):
        try:
            if isinstance(record, _Malformed):
                raise record
            problem = _to_problem(record, row, spec, default_source=path.stem)
        except _Malformed as malformed:
            error = RowError(file, row, str(malformed))
            if spec.on_error == "raise":
                raise ValueError(str(error)) from None
            errors.append(error)
            continue
        id_counts[problem.id] += 1
        if id_counts[problem.id] > 1:  # e.g. AIME repeated 4 times for avg@4
            problem = replace(problem, id=f"{problem.id}#{id_counts[problem.id] - 1}")
        problems.append(problem)
    if errors:
        first = errors[0]
        logger.warning("%s: skipped %d malformed rows; first: row %d: %s", file, len(errors), first.row, first.reason)
    if not problems:
        detail = f"{len(errors)} malformed rows, first: {errors[0]}" if errors else "the file has no rows"
        raise ValueError(f"dataset {file} has no usable rows ({detail})")
    return Dataset(path=file, problems=problems, errors=errors)


def _as_spec(spec) -> DatasetSpec:
    if isinstance(spec, DatasetSpec):
        return spec
    if isinstance(spec, Mapping):
        known = [f.name for f in fields(DatasetSpec)]
        unknown = sorted(set(spec) - set(known))
        if unknown:
            raise ValueError(f"unknown dataset option(s) {unknown}; valid options: {known}")
        return DatasetSpec(**spec)
    return DatasetSpec(path=spec)


def _resolve_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.is_dir():
        return "hf_disk"
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; "
            f"set DatasetSpec.format to one of {FORMATS[1:]}"
        ) from None


def _read_records(path: Path, fmt: str, split: str | None) -> Iterator[tuple[int, dict | _Malformed]]:
    """Yield ``(row, record)``; a row that cannot even be decoded yields ``(row, _Malformed)``."""
    if fmt == "jsonl":
        for row, line in enumerate(_read_text(path).split("\n")):  # not splitlines(): U+2028 is valid JSON
            if line.strip():
                yield row, _decode_json_object(line)
    elif fmt == "json":
        try:
            records = json.loads(_read_text(path))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON array of objects, got {type(records).__name__}")
        for row, record in enumerate(records):
            yield row, record if isinstance(record, dict) else _not_an_object(record)
    elif fmt == "parquet":
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except pyarrow.ArrowException as err:
            raise ValueError(f"{path} is not a readable parquet file: {err}") from None
        yield from enumerate(table.to_pylist())
    else:
        yield from enumerate(_read_hf_disk(path, split))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text: {err}") from None


def _decode_json_object(line: str) -> dict | _Malformed:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return _Malformed(f"invalid JSON: {err}")
    return record if isinstance(record, dict) else _not_an_object(record)


def _not_an_object(record: Any) -> _Malformed:
    return _Malformed(f"expected a JSON object, got {type(record).__name__}")


def _read_hf_disk(path: Path, split: str | None):
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        splits = sorted(loaded)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in loaded:
            raise ValueError(f"{path} holds splits {splits}; set DatasetSpec.split to one of them")
        loaded = loaded[split]
    elif split is not None:
        raise ValueError(f"{path} is a single dataset without splits; remove DatasetSpec.split={split!r}")
    return iter(loaded)


def _to_problem(record: dict, row: int, spec: DatasetSpec, default_source: str) -> Problem:
    problem_field, problem = _field(record, spec.problem_field, PROBLEM_FIELDS, "problem")
    answer_field, answer = _field(record, spec.answer_field, ANSWER_FIELDS, "answer")
    id_field, raw_id = _field(record, spec.id_field, ID_FIELDS, "id", required=spec.id_field is not None)
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, (str, int))):
        raise _wrong_type("id", id_field, raw_id, "a string or an integer")
    source = spec.source or _source_of(record) or default_source
    used = {problem_field.split(".")[0], answer_field.split(".")[0]}
    return Problem(
        id=f"{source}/{row if raw_id is None else raw_id}",
        source=source,
        problem=_problem_text(problem, problem_field),
        answer=_answer_text(answer, answer_field),
        metadata={key: value for key, value in record.items() if key not in used},
    )


def _field(record: dict, name: str | None, candidates: tuple[str, ...], what: str, required: bool = True):
    """Return ``(field name, value)`` of the named field or of the first candidate present."""
    for candidate in (name,) if name else candidates:
        value = _lookup(record, candidate)
        if value is not None:
            return candidate, value
    if not required:
        return None, None
    looked_for = f"field {name!r}" if name else "fields " + ", ".join(map(repr, candidates))
    raise _Malformed(f"missing {what} (no non-null {looked_for})")


def _wrong_type(what: str, field_name: str, value: Any, expected: str) -> _Malformed:
    return _Malformed(f"{what} field {field_name!r} has type {type(value).__name__}; expected {expected}")


def _lookup(record: dict, dotted: str):
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _source_of(record: dict) -> str | None:
    source = record.get(SOURCE_FIELD)
    return source.strip() if isinstance(source, str) and source.strip() else None


def _problem_text(value: Any, field_name: str) -> str:
    if isinstance(value, list):  # verl: the prompt is a chat; the problem is the last user turn
        user_turns = [m.get("content") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if not user_turns:
            raise _Malformed(f"problem field {field_name!r} is a list without a user message")
        value = user_turns[-1]
    if not isinstance(value, str):
        raise _wrong_type("problem", field_name, value, "a string or a chat message list")
    if not value.strip():
        raise _Malformed(f"empty problem in field {field_name!r}")
    return value.strip()


def _answer_text(value: Any, field_name: str) -> str:
    if isinstance(value, list) and value:  # OlympiadBench: ["$\\frac{1}{2}$"]; several: one answer each
        parts = [_answer_text(part, field_name) for part in value]
        return parts[0] if len(parts) == 1 else ", ".join(parts)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _wrong_type("answer", field_name, value, "a string, a number or a list of them")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Malformed(f"answer in field {field_name!r} is not a finite number: {value!r}")
        value = int(value) if value.is_integer() else value  # AMC stores 27 as 27.0
    text = str(value).strip()
    if len(text) > 2 and text.startswith("$") and text.endswith("$"):  # "$x^2$": math mode only
        text = text.strip("$").strip()
    if any(command in text for command in _BOX_COMMANDS):  # a worked solution: the gold is its last box
        boxed = extract_boxed(text)
        if boxed is None:
            raise _Malformed(f"answer in field {field_name!r} has a \\boxed but no complete, non-empty box")
        text = boxed
    if not text:
        raise _Malformed(f"empty answer in field {field_name!r}")
    return text
