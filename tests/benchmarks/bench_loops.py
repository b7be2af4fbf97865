#!/usr/bin/env python3
"""gand's training loop side by side with the lecture's loops (shared/bench/reference_loops.py).

For each config it runs the reference loop (as a user would run the lecture's code) and gand's
own loop on the same model, batch size and device, and prints one JSON line per pair:

    python tests/benchmarks/bench_loops.py [--configs ring8-gan,mnist-dcgan,...] [--device cpu]
                                           [--seconds 10] [--precision fp32|bf16]

gand's figure is steady-state: the time for 2K steps minus the time for K steps, divided by K,
so start-up, the final checkpoint and the final sample grid are left out for both.
It is not a test (timings are not assertions); run it on a quiet machine and quote the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "bench" / "reference_loops.py"
MNIST = ROOT / "tests" / "data" / "mnist"  # gand's own copy; only the reference loops are shared

# reference config → (gand variant, loss, data spec maker, batch size, extra options)
CONFIGS = {
    "ring8-gan": ("gan", "bce", lambda tmp: "ring8", 256, {}),
    "mnist-dcgan": ("dcgan", "bce", lambda tmp: f"mnist:{MNIST}", 64, {}),
    "dcgan64": ("dcgan", "bce", lambda tmp: rgb_folder(tmp, 64), 128, {}),
    "dcgan64-wgangp": ("wgan-gp", None, lambda tmp: rgb_folder(tmp, 64), 64, {}),
    "cyclegan256": ("cyclegan", None, lambda tmp: f"{rgb_folder(tmp, 256, 8)},{rgb_folder(tmp, 256, 8, 'b')}",
                    1, {}),
}


def rgb_folder(tmp: Path, size: int, n: int = 256, name: str = "a") -> str:
    """A folder of random RGB PNGs: the reference's tensor pool, as files gand can load."""
    from PIL import Image
    import numpy as np

    folder = tmp / f"rgb{size}{name}"
    if not folder.exists():
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return str(folder)


def reference(config: str, device: str, seconds: float, precision: str) -> dict:
    out = subprocess.run([sys.executable, str(REFERENCE), config, "--device", device, "--seconds",
                          str(seconds), "--precision", precision, "--data", "tensor",
                          "--mnist", str(MNIST)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gand_loop(config: str, device: str, seconds: float, precision: str, tmp: Path) -> dict:
    from gand import plugins
    from gand.engine.trainer import Hooks, Run, train
    from gand.jobspec import build_config

    variant, loss, data, bs, extra = CONFIGS[config]
    reg = plugins.load()
    sets = [f"{k}={v}" for k, v in extra.items()] + [f"precision={precision}"]
    cfg = build_config(reg, variant=variant, loss=loss, data=data(tmp), steps=10, batch_size=bs,
                       sets=sets, seed=0, device=device, checkpoint_every=0, sample_every=0)
    run = Run.build(cfg, reg)
    sync = torch.cuda.synchronize if run.device.type == "cuda" else (lambda: None)

    def timed(k: int, start: int) -> float:
        run.config["steps"] = start + k
        sync()
        t = time.perf_counter()
        train(run, tmp / "run", Hooks(), start_step=start)
        sync()
        return time.perf_counter() - t

    timed(3, 0)  # warm-up
    k = 5
    while timed(k, 3) < seconds / 3 and k < 100000:  # size K to about a third of the budget
        k *= 2
    t1 = timed(k, 3)
    t2 = timed(2 * k, 3)
    step_s = max(t2 - t1, 1e-9) / k
    return {"config": config, "device": str(run.device), "batch_size": bs, "precision": precision,
            "img_per_s": round(bs / step_s, 1), "step_ms": round(1000 * step_s, 3), "steps": 3 * k}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="ring8-gan,mnist-dcgan,dcgan64")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    args = ap.parse_args()
    machine = {"machine": platform.node(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
               "threads": torch.get_num_threads(),
               "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(json.dumps(machine))
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            ref = reference(config, args.device, args.seconds, args.precision)
            ours = gand_loop(config, args.device, args.seconds, args.precision, Path(tmp))
            print(json.dumps({"config": config, "reference_img_per_s": ref["img_per_s"],
                              "gand_img_per_s": ours["img_per_s"],
                              "speedup": round(ours["img_per_s"] / ref["img_per_s"], 2),
                              "reference": ref, "gand": ours}), flush=True)


if __name__ == "__main__":
    main()
