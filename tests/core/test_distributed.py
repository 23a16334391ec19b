"""Under torchrun, models are wrapped in DDP and only rank 0 writes a run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = """\
name: ddp
data: {n: 40, size: 32}
generators:
  - plugin: dcgan
    params: {iterations: 4, batch_size: 8, ngf: 8, ndf: 8}
experiments:
  - models:
      - plugin: brain_cnn
        params: {epochs: 2, batch_size: 8}
    train_on: [real, synthetic]
    synthetic_per_class: 8
evaluate: [classification]
"""


def _free_port() -> int:
    """A TCP port free right now (``--master_port=0`` can hang in the c10d rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_cpu_processes_make_one_run(tmp_path: Path) -> None:
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={_free_port()}",
            "-m",
            "synthmri",
            "--quiet",
            "run",
            str(recipe),
            "--out",
            str(tmp_path / "runs"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert len(metrics["classification"]) == 2
