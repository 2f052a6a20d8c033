"""Adapter file sizes: QR-LoRA as the registered PEFT tuner (lambdas and head) against the same adapter as
plain PEFT LoRA factors (B = Q_r diag(lambda), A = R_r: what `export --format lora` writes).

    python benchmarks/export_sizes.py --models minilm,smollm2,roberta-base-shape

QR-LoRA with the paper's setting (tau = 0.5, rank rule relative, Wq of the last 4 layers) plus Wq, Wv of
the last 4 layers. Both folders are checked to give the same logits before their sizes are printed.
No downloads: models as in benchmarks/basis_setup.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import peft
import torch

from basis_setup import MODELS, load_model
from qrlora import QRLoRAConfig, apply_method, export_peft, save_peft

TARGETS = (("last:4", "q"), ("last:4", "q,v"))


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(the weights file, the whole folder) in bytes."""
    return (folder / "adapter_model.safetensors").stat().st_size, sum(p.stat().st_size for p in folder.rglob("*"))


def measure(name: str, layers: str, matrices: str) -> dict:
    config = QRLoRAConfig(tau=0.5, layers=layers, matrices=matrices)
    model, report = apply_method(load_model(name).eval(), config)
    with torch.no_grad():
        for module in report.modules:
            model.get_submodule(module).lambdas.normal_(generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": torch.tensor([[5, 17, 42, 9, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    expected = model(**inputs).logits
    row = {"model": name, "targets": f"{layers} {matrices}", "lambdas": report.adapter_params,
           "head": report.trainable_params - report.adapter_params}
    with tempfile.TemporaryDirectory() as scratch:
        for kind, write in (("qrlora", lambda folder: save_peft(model, report, config, folder)),
                            ("lora", lambda folder: export_peft(model, folder))):
            folder = Path(scratch) / kind
            write(folder)
            reloaded = peft.PeftModel.from_pretrained(load_model(name).eval(), str(folder))
            torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-4, atol=1e-5)
            row[kind] = folder_bytes(folder)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from: {', '.join(MODELS)}")
    args = parser.parse_args(argv)
    print(f"command: python {' '.join(sys.argv)}")
    print("| model | targets | λ | head params | QR-LoRA tuner: weights file / folder | LoRA factors: weights file / "
          "folder | ratio (weights files) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        for layers, matrices in TARGETS:
            row = measure(name, layers, matrices)
            (small, small_all), (large, large_all) = row["qrlora"], row["lora"]
            print(f"| {name} | {row['targets']} | {row['lambdas']:,} | {row['head']:,} | {small / 1024:,.1f} KiB / "
                  f"{small_all / 1024:,.1f} KiB | {large / 1024:,.1f} KiB / {large_all / 1024:,.1f} KiB | "
                  f"{large / small:,.0f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
