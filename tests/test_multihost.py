"""A two-process launch (two CPU hosts of two devices each, ``jax.distributed`` over localhost; two runs
per device) gives the results of one process on one device bit for bit, and only process 0 prints.

The processes find each other through ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID``, as a hand-started cluster would. Both sides use ``--vmap-block 2``, so every run is
computed by the same vectorised group (see jmarl/program.py). Slow: three programs compile.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jmarl import run_dir

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--algo", "ippo", "--env", "matrix_dpo4", "--seeds", "8", "--total-steps", "64", "--vmap-block", "2",
        "--set", "num_envs=4", "--set", "num_steps=8", "--set", "hidden_dim=8", "--set", "num_layers=1",
        "--set", "epochs=2", "--set", "eval_every=1", "--set", "eval_episodes=4"]
RESULTS = ("metrics.jsonl", "metrics.csv", "summary.json")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(out: Path, extra_args: list[str], extra_env: dict) -> subprocess.Popen:
    """Every process has two CPU devices: XLA:CPU's threading depends on a process's device count, which
    can change the last bits of a float reduction, so both sides keep the same per-process layout."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", **extra_env}
    return subprocess.Popen([sys.executable, "experiments/run.py", *ARGS, *extra_args, "--out", str(out)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_hosts_equal_one_device(tmp_path):
    port = free_port()
    hosts = [launch(tmp_path / "multi", [], {"JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
                                            "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}) for i in (0, 1)]
    single = launch(tmp_path / "single", ["--devices", "1"], {})
    outputs = [p.communicate(timeout=900) for p in (*hosts, single)]
    for p, (_, err) in zip((*hosts, single), outputs, strict=True):
        assert p.returncode == 0, err[-3000:]

    (out0, _), (out1, _), (out_single, _) = outputs
    assert "8 runs on 4 device(s)" in out0 and "100%" in out0
    assert "1 device(s)" in out_single
    assert "env steps" not in out1 and "metric" not in out1  # process 1 neither logs nor prints the table

    for name in RESULTS:
        assert (tmp_path / "multi" / name).read_text() == (tmp_path / "single" / name).read_text(), name
    # The checkpoint both hosts wrote together restores here (one process, one device) to the same state.
    _, multi, _, record_multi = run_dir.load_checkpoint(tmp_path / "multi")
    _, ref, _, record_single = run_dir.load_checkpoint(tmp_path / "single")
    assert record_multi["env_steps"] == record_single["env_steps"] == 64
    leaves_multi, leaves_ref = jax.tree.leaves(multi), jax.tree.leaves(ref)
    assert len(leaves_multi) == len(leaves_ref) > 10
    for a, b in zip(leaves_multi, leaves_ref, strict=True):
        assert a.shape[0] == 8
        np.testing.assert_array_equal(a, b)
