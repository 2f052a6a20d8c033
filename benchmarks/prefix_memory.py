"""Peak memory of a trial with the frozen-prefix cache: computing the states (a miss), reading them (a
hit), and without the cache, each in a fresh process, against the size of the cached states.

The issue's case is data_size.yaml on a GPU node (50k QNLI examples, roberta-base, last 4 layers: about
8 GB of train states); scaled down here to SST-2 with MiniLM, where the states of 10k examples are a
few hundred MB.

    python benchmarks/prefix_memory.py --train-size 10000
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import parse, parser_with_data_options

TRIAL = """
import json, resource, sys, threading, time
from trainables.config import TrialConfig
from trainables.train import run_trial

peak_anon = [0.0]
def sample():  # RssAnon: the process's own memory; mapped file pages (page cache) are not in it
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anon[0] = max(peak_anon[0], int(line.split()[1]) / 1024)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
record = run_trial(TrialConfig(**json.loads(sys.argv[1])))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": peak_anon[0], "score": record["score"]}))
"""


def trial(config: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", TRIAL, json.dumps(config)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = parser_with_data_options(__doc__.splitlines()[0], epochs=1)
    parser.add_argument("--layers", default="last:4")
    args = parse(parser)
    with tempfile.TemporaryDirectory() as cache_dir:
        base = {"task": "sst2", "model": args.model, "method": "qrlora", "layers": args.layers, "matrices": "q",
                "train_size": args.train_size, "epochs": args.epochs, "glue_dir": args.glue_dir,
                "cache_dir": cache_dir, "cpus": args.threads}
        rows = {"no prefix cache": trial({**base, "caches": "basis"}),
                "prefix cache, miss": trial({**base, "caches": "basis,prefix"}),
                "prefix cache, hit": trial({**base, "caches": "basis,prefix"})}
        states_mb = sum(path.stat().st_size for path in (Path(cache_dir) / "prefix").glob("*.safetensors")) / 2**20
    print(f"SST-2, {args.model}, Wq of {args.layers}, {args.train_size} examples, {args.epochs} epoch(s); "
          f"cached states (train + dev): {states_mb:.0f} MB")
    print(f"{'trial':<22}{'peak RSS (MB)':>15}{'peak anonymous (MB)':>21}{'anonymous over no cache':>25}{'score':>8}")
    baseline = rows["no prefix cache"]["peak_anon_mb"]
    for name, row in rows.items():
        extra = row["peak_anon_mb"] - baseline
        print(f"{name:<22}{row['peak_rss_mb']:>15.0f}{row['peak_anon_mb']:>21.0f}"
              f"{f'{extra:.0f} MB = {extra / states_mb:.2f}x states':>25}{row['score']:>8.4f}")

if __name__ == "__main__":
    main()
