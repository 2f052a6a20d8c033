"""GLUE loader tests: real files from $GLUE_DIR, hand-written MNLI/QQP fixtures, broken copies."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trainables import glue

FIXTURES = Path(__file__).parent / "fixtures" / "glue"

# Rows per split, from the table in the GLUE_DIR README.
REAL_ROWS = {
    ("cola", "train"): 8551,
    ("cola", "validation"): 1043,
    ("sst2", "train"): 67349,
    ("sst2", "validation"): 872,
    ("mrpc", "train"): 3668,
    ("mrpc", "validation"): 408,
    ("stsb", "train"): 5749,
    ("stsb", "validation"): 1500,
    ("rte", "train"): 2490,
    ("rte", "validation"): 277,
    ("qnli", "validation"): 5463,
}
NLI = {"entailment": 0, "not_entailment": 1}
MNLI = {"entailment": 0, "neutral": 1, "contradiction": 2}
# Written from the GLUE file formats, independently of the loader's own table:
# (task dir, has header, text column positions, label column position, label parser).
RAW_LAYOUT = {
    "cola": ("CoLA", False, (3,), 1, int),
    "sst2": ("SST-2", True, (0,), 1, int),
    "mrpc": ("MRPC", True, (3, 4), 0, int),
    "stsb": ("STS-B", True, (7, 8), 9, float),
    "rte": ("RTE", True, (1, 2), 3, NLI.__getitem__),
    "qnli": ("QNLI", True, (1, 2), 3, NLI.__getitem__),
}


def raw_rows(path: Path, has_header: bool) -> list[list[str]]:
    """Data rows of a .tsv, split by hand: bytes on b'\\n', cells on tabs, leading BOM dropped."""
    lines = path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8").split("\n")
    lines = [line for line in lines if line]
    return [line.split("\t") for line in lines[1 if has_header else 0 :]]


def raw_file(glue_dir: Path, task: str, split: str) -> Path:
    return glue_dir / RAW_LAYOUT[task][0] / ("train.tsv" if split == "train" else "dev.tsv")


def test_task_catalogue():
    hub_columns = {
        "cola": ("CoLA", ("sentence",)),
        "sst2": ("SST-2", ("sentence",)),
        "mrpc": ("MRPC", ("sentence1", "sentence2")),
        "qqp": ("QQP", ("question1", "question2")),
        "stsb": ("STS-B", ("sentence1", "sentence2")),
        "mnli": ("MNLI", ("premise", "hypothesis")),
        "qnli": ("QNLI", ("question", "sentence")),
        "rte": ("RTE", ("sentence1", "sentence2")),
    }
    assert {name: (t.glue_dir_name, t.text_fields) for name, t in glue.TASKS.items()} == hub_columns
    assert all(t.hub_config == name for name, t in glue.TASKS.items())
    assert glue.get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert glue.get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert glue.get_task("qnli").text_fields == ("question", "sentence")
    assert glue.get_task("stsb").num_labels == 1
    assert all(task.num_labels == len(task.label_names) for task in glue.TASKS.values() if task.name != "stsb")


def test_unknown_task_and_split_are_one_line_errors():
    with pytest.raises(ValueError, match=re.escape("task: unknown 'foo'; choose one of cola, mnli, mrpc, qnli, qqp, rte, sst2, stsb")):
        glue.get_task("foo")
    with pytest.raises(ValueError, match=re.escape("split: unknown 'test'; choose one of train, validation")):
        glue.load_split("rte", "test", FIXTURES)


@pytest.mark.parametrize(("task", "split"), sorted(REAL_ROWS))
def test_real_split_schema_and_rows(glue_dir, task, split):
    spec = glue.get_task(task)
    dataset = glue.load_split(task, split, glue_dir)
    assert len(dataset) == REAL_ROWS[task, split]
    assert dataset.column_names == [*spec.text_fields, "label", "idx"]
    columns = dataset.to_dict()  # plain lists; dataset["x"] is a lazy Column in datasets>=4
    assert columns["idx"] == list(range(len(dataset)))
    labels = columns["label"]
    if task == "stsb":
        assert dataset.features["label"].dtype == "float32"
        assert 0.0 <= min(labels) and max(labels) <= 5.0
    else:
        assert dataset.features["label"].dtype == "int64"
        assert dataset.features["label"].names == list(spec.label_names)
        assert set(labels) == set(range(spec.num_labels))

    # Every row equals the raw file split by hand.
    has_header, text_positions, label_position, parse = RAW_LAYOUT[task][1:]
    rows = raw_rows(raw_file(glue_dir, task, split), has_header)
    assert len(rows) == len(dataset)
    for field, position in zip(spec.text_fields, text_positions):
        assert columns[field] == [row[position] for row in rows]
    expected = [parse(row[label_position]) for row in rows]
    if task == "stsb":
        assert labels == pytest.approx(expected, abs=1e-6)
    else:
        assert labels == expected


@pytest.mark.parametrize(
    ("task", "split", "row", "expected"),
    [
        ("cola", "train", 0, ("Our friends won't buy this analysis, let alone the next one we propose.", 1)),
        ("sst2", "train", 0, ("hide new secretions from the parental units ", 0)),
        ("mrpc", "validation", 0, (
            "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
            '" The foodservice pie business does not fit our long-term growth strategy .',
            1,
        )),
        ("stsb", "validation", 267, ("A woman posing by a pillar with a U2 sign.", 'a woman is standing by a pillar where "u2" is written.', 4.2)),
        ("rte", "train", 0, ("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1)),
        ("qnli", "validation", 0, (
            "What came into force after the new constitution was herald?",
            "As of that day, the new constitution heralding the Second Republic came into force.",
            0,
        )),
    ],
)
def test_known_rows(glue_dir, task, split, row, expected):
    example = glue.load_split(task, split, glue_dir)[row]
    *texts, label = expected
    assert [example[field] for field in glue.get_task(task).text_fields] == texts
    assert example["label"] == pytest.approx(label)
    assert example["idx"] == row


def test_mrpc_quality_column_is_read_despite_bom(glue_dir):
    labels = glue.load_split("mrpc", "train", glue_dir)["label"][:]
    assert (labels.count(1), labels.count(0)) == (2474, 1194)
    assert (glue_dir / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t")


def test_quotes_and_inner_bom_survive_exactly(glue_dir):
    stsb = glue.load_split("stsb", "validation", glue_dir).to_dict()
    rows_with_quote = [r for r in raw_rows(glue_dir / "STS-B" / "dev.tsv", True) if '"' in r[7] + r[8]]
    assert len(rows_with_quote) > 100
    assert sum('"' in a + b for a, b in zip(stsb["sentence1"], stsb["sentence2"])) == len(rows_with_quote)
    # QNLI dev has three U+FEFF characters inside sentences: data, not a BOM to strip.
    qnli = glue.load_split("qnli", "validation", glue_dir).to_dict()
    assert sum(text.count("\ufeff") for text in qnli["sentence"]) == 3


@pytest.mark.parametrize(("task", "split", "rows"), [
    ("mnli", "train", 12), ("mnli", "validation_matched", 12), ("mnli", "validation_mismatched", 12),
    ("qqp", "train", 12), ("qqp", "validation", 12),
])
def test_fixture_splits(task, split, rows):
    spec = glue.get_task(task)
    dataset = glue.load_split(task, split, FIXTURES)
    assert len(dataset) == rows
    assert dataset.column_names == [*spec.text_fields, "label", "idx"]
    assert dataset.features["label"].names == list(spec.label_names)
    path = FIXTURES / spec.glue_dir_name / (split.replace("validation", "dev") + ".tsv")
    header, *data = [line.split("\t") for line in path.read_text().splitlines()]
    if task == "mnli":
        texts = ("sentence1", "sentence2")
        expected = [MNLI[row[header.index("gold_label")]] for row in data]
        assert header[-1] == "gold_label" and len(header) == (12 if split == "train" else 16)
    else:
        texts = ("question1", "question2")
        expected = [int(row[header.index("is_duplicate")]) for row in data]
    assert dataset["label"] == expected
    for field, column in zip(spec.text_fields, texts):
        assert dataset[field] == [row[header.index(column)] for row in data]


def test_mnli_uses_gold_label_not_label1():
    example = glue.load_split("mnli", "validation_matched", FIXTURES)[0]
    assert example["label"] == 1  # gold neutral; label1 says entailment
    assert glue.load_split("mnli", "validation_matched", FIXTURES)[5]["premise"] == 'He said "not today" and walked out without another word.'


def test_glue_dir_defaults_to_environment(monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(FIXTURES))
    assert glue.load_split("qqp", "validation")["question1"][1] == "What programming language should I learn first?"


def broken_copy(source: Path, target: Path, line_number: int, edit) -> Path:
    """The first 30 lines of `source` written to `target`, with one 1-based line edited."""
    lines = source.read_bytes().decode("utf-8").rstrip("\n").split("\n")[:30]
    lines[line_number - 1] = edit(lines[line_number - 1])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def replace_cell(position: int, value: str):
    def edit(line: str) -> str:
        cells = line.split("\t")
        cells[position] = value
        return "\t".join(cells)

    return edit


@pytest.mark.parametrize(
    ("task", "split", "file", "line", "edit", "message"),
    [
        ("rte", "train", "RTE/train.tsv", 17, replace_cell(3, "maybe"), "label 'maybe' not in entailment, not_entailment"),
        ("cola", "validation", "CoLA/dev.tsv", 3, replace_cell(1, "2"), "label '2' not in 0, 1"),
        ("sst2", "train", "SST-2/train.tsv", 5, lambda line: line.replace("\t", " "), "expected 2 tab-separated columns, got 1"),
        ("mrpc", "validation", "MRPC/dev.tsv", 4, lambda line: line + "\textra", "expected 5 tab-separated columns, got 6"),
        ("stsb", "validation", "STS-B/dev.tsv", 9, replace_cell(9, "n/a"), "score 'n/a' is not a finite number"),
        ("qnli", "validation", "QNLI/dev.tsv", 1, replace_cell(3, "gold"), "no column 'label' in header index, question, sentence, gold"),
    ],
)
def test_malformed_rows_name_file_and_line(glue_dir, tmp_path, task, split, file, line, edit, message):
    path = broken_copy(glue_dir / file, tmp_path / file, line, edit)
    with pytest.raises(ValueError, match=re.escape(f"{path} line {line}: {message}")):
        glue.load_split(task, split, tmp_path)


def test_missing_file_names_path_and_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        glue.load_split("mnli", "validation_mismatched", tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'MNLI' / 'dev_mismatched.tsv'}: no such file")
    assert all(str(tmp_path / "MNLI" / name) in message for name in ("train.tsv", "dev_matched.tsv"))


def test_rewritten_file_is_reread(tmp_path):
    path = tmp_path / "QQP" / "dev.tsv"
    broken_copy(FIXTURES / "QQP" / "dev.tsv", path, 2, lambda line: line)
    assert len(glue.load_split("qqp", "validation", tmp_path)) == 12
    path.write_text("\n".join(path.read_text().splitlines()[:4]) + "\n")
    assert len(glue.load_split("qqp", "validation", tmp_path)) == 3


@pytest.fixture(scope="module")
def cola_train(glue_dir):
    return glue.load_split("cola", "train", glue_dir)


def test_subsample_is_seeded_and_nested(cola_train):
    small = glue.subsample(cola_train, 100, seed=7)
    large = glue.subsample(cola_train, 1000, seed=7)
    assert small["idx"] == glue.subsample(cola_train, 100, seed=7)["idx"]
    assert small["idx"] == large["idx"][:100]
    assert len(set(large["idx"])) == 1000
    assert small["idx"] != glue.subsample(cola_train, 100, seed=8)["idx"]
    assert small[0]["sentence"] == cola_train[small[0]["idx"]]["sentence"]
    assert small.features == cola_train.features


def test_subsample_is_the_documented_permutation_prefix(cola_train):
    # Pinned so that train subsets of past runs stay reproducible.
    expected = np.random.default_rng(11).permutation(len(cola_train))[:50]
    assert glue.subsample(cola_train, 50, seed=11)["idx"][:] == expected.tolist()


@pytest.mark.parametrize("size", [None, 8551, 10**6])
def test_subsample_of_everything(cola_train, size):
    everything = glue.subsample(cola_train, size, seed=0)
    assert sorted(everything["idx"][:]) == list(range(len(cola_train)))


@pytest.mark.parametrize("size", [0, -5, 2.5, "100", True])
def test_subsample_rejects_bad_sizes(cola_train, size):
    with pytest.raises(ValueError, match=r"^train_size: "):
        glue.subsample(cola_train, size, seed=0)
