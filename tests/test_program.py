"""The run axis sharded over 4 (forced host) devices gives the single-device results, bit for bit.

One subprocess, because the device count is fixed when jax starts. Six seeds on four devices are
padded to eight (two runs per device); the single-device reference computes its six runs in blocks
of two. Both sides use ``vmap_block=2``, so every run is computed by the same vectorised group of two,
and every device runs the single-device executable (jmarl/program.py): the train states, metrics and
results files must be identical, floats included. The seed keys as the runner places them show the
layout (two runs on each device); a checkpoint written from the padded, sharded state holds the six
real runs.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from compile_settings import users_compile_environment

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    import jmarl
    from jmarl import devices, run_dir, runner, spec

    out = sys.argv[1]
    assert len(jax.devices()) == 4, jax.devices()
    config = jmarl.make_config("ippo", "matrix_dpo4", total_steps=64, num_envs=4, num_steps=8, hidden_dim=8,
                               num_layers=1, epochs=2, eval_every=1, eval_episodes=4)
    quiet = dict(log=lambda line: None, plots=False)
    runner.run(config, seeds=6, out_dir=out + "/d4", devices=4, vmap_block=2, **quiet)
    runner.run(config, seeds=6, out_dir=out + "/d1", devices=1, vmap_block=2, **quiet)
    mesh = devices.make_mesh(4)
    padded = devices.padded_size(6, mesh)
    leaf = devices.put_runs(devices.pad_runs(np.asarray(spec.seed_keys(0, 6)), padded), mesh)
    print(json.dumps({"padded": padded, "devices": len(leaf.sharding.device_set),
                      "shard_rows": leaf.addressable_shards[0].data.shape[0]}))
    for name in ("d4", "d1"):
        _, state, _, _ = run_dir.load_checkpoint(out + "/" + name)
        np.savez(out + "/" + name + ".npz", *jax.tree.leaves(state))
""")


def test_four_devices_equal_one_device(tmp_path):
    # Four host devices, compiled as users compile: the session's cheap pipeline can give the sharded program
    # and the one-device program different last bits.
    env = users_compile_environment()
    env.update(XLA_FLAGS=f"{env['XLA_FLAGS']} --xla_force_host_platform_device_count=4".strip(),
               JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"padded": 8, "devices": 4, "shard_rows": 2}  # two runs on each of the four devices

    sharded, single = np.load(tmp_path / "d4.npz"), np.load(tmp_path / "d1.npz")
    assert len(sharded.files) == len(single.files) > 10
    for name in sharded.files:
        a, b = sharded[name], single[name]
        assert a.shape == b.shape and a.shape[0] == 6  # the padding runs are not checkpointed
        np.testing.assert_array_equal(a, b)  # params, optimiser state, RNG keys, env states: bit for bit
    files = {d: {f: (tmp_path / d / f).read_text() for f in ("metrics.jsonl", "metrics.csv", "summary.json")}
             for d in ("d4", "d1")}
    assert files["d4"] == files["d1"]
    rows = [json.loads(line) for line in files["d4"]["metrics.jsonl"].splitlines()]
    assert [(r["env_steps"], r["seed"]) for r in rows] == [(s, i) for s in (32, 64) for i in range(6)]


def test_vmap_runs_gives_each_run_its_own_result_batched_or_alone():
    """A batch of one run is traced unbatched, more runs through a vmap; both give each run f of that run
    (checked against NumPy), with the run axis kept."""
    import jax

    from jmarl.program import vmap_runs

    def f(x, y):
        return {"sum": x.sum() + y, "scaled": 2.0 * x}

    rng = np.random.default_rng(0)
    for runs in (1, 3):
        x = rng.normal(size=(runs, 4)).astype(np.float32)
        y = rng.normal(size=(runs,)).astype(np.float32)
        out = jax.jit(vmap_runs(f))(x, y)
        np.testing.assert_allclose(out["sum"], x.sum(axis=1) + y, rtol=1e-6)
        np.testing.assert_allclose(out["scaled"], 2.0 * x, rtol=1e-6)
        assert out["sum"].shape == (runs,) and out["scaled"].shape == (runs, 4)


def test_cpu_devices_splits_the_runs_over_cores_with_the_same_results(tmp_path):
    """run.py --cpu-devices 2: three seeds on two CPU devices (padded to four); with --vmap-block 1 every
    run is computed alone either way, so the metrics equal the one-device run's. The one-device run
    on a machine with several cores says how to split; the split run does not."""
    env = users_compile_environment()
    env.update(JAX_PLATFORMS="cpu")
    tiny = [sys.executable, str(ROOT / "experiments" / "run.py"), "--algo", "ippo", "--env", "matrix_dpo4",
            "--set", "num_envs=2", "--set", "num_steps=5", "--set", "hidden_dim=4", "--set", "eval_every=2",
            "--set", "eval_episodes=1", "--no-plots", "--total-steps", "40", "--no-checkpoints", "--seeds", "3",
            "--vmap-block", "1", "--no-compile-cache"]
    logs = {}
    for name, extra in (("one", []), ("split", ["--cpu-devices", "2"])):
        proc = subprocess.run(tiny + extra + ["--out", str(tmp_path / name)], capture_output=True, text=True,
                              timeout=600, env=env, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs[name] = proc.stdout
    assert "= 3 runs on 2 device(s)" in logs["split"] and "= 3 runs on 1 device(s)" in logs["one"]
    hint = "the 3 runs share one CPU device"
    assert "--cpu-devices" not in logs["split"]
    assert (hint in logs["one"]) == ((os.cpu_count() or 1) > 1), logs["one"]
    # The same vectorised groups; XLA:CPU's threading follows the device count, which may move last bits
    # (docs/runner.md), so the numbers are compared to float32 precision rather than byte for byte.
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("one", "split")}
    assert [sorted(r) for r in rows["one"]] == [sorted(r) for r in rows["split"]] and len(rows["one"]) == 6
    for a, b in zip(rows["one"], rows["split"], strict=True):
        np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=1e-5, atol=1e-6)


def test_use_cpu_devices_refuses_a_count_jax_cannot_take_any_more():
    """In a process where jax has started, the count it already has is accepted and any other refused."""
    import jax
    import pytest

    from jmarl.config import ConfigError
    from jmarl.devices import cpu_split_hint, use_cpu_devices

    have = len(jax.devices("cpu"))
    use_cpu_devices(have)
    with pytest.raises(ConfigError, match=rf"--cpu-devices {have + 1}: jax has already started"):
        use_cpu_devices(have + 1)
    with pytest.raises(ConfigError, match="--cpu-devices must be >= 1, got 0"):
        use_cpu_devices(0)
    assert cpu_split_hint(1) is None  # one run: nothing to split
