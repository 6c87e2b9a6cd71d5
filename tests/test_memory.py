"""The memory plan (jmarl/memory.py): its arithmetic by hand, groups that train bit for bit like an
ungrouped run, a clear exit before compiling when one run cannot fit, ``--check`` showing the plan, no
second copy of the replay buffer in a compiled chunk, and XLA's out-of-memory error as one line."""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from compile_settings import users_compile_environment

import envs
import jmarl
import jmarl.program
from experiments import run as run_cli
from jmarl import memory, run_dir, runner
from jmarl.program import compile_program
from jmarl.spec import abstract_state, program_spec

GIB = 2**30
HOST = 2**50  # a host that holds every group between turns


def test_groups_by_hand():
    cfg = jmarl.make_config("lan", "smax_3s5z")
    per_run = int(3.5 * GIB)
    # 139 GiB x 0.92 (an H200 under the CLI's memory fraction): 0.9 x 127.9 / 3.5 = 32.9 -> all 32 at once
    mp = memory.plan(cfg, per_run, 32, 1, None, (int(139 * 0.92 * GIB), "test"))
    assert (mp.group, mp.groups, mp.padded) == (32, 1, 32)
    # 80 GiB: 0.9 x 80 / 3.5 = 20.6 -> 20 fit; 32 runs need 2 groups, balanced to 16 + 16
    mp = memory.plan(cfg, per_run, 32, 1, None, (80 * GIB, "test"), HOST)
    assert (mp.group, mp.groups, mp.padded) == (16, 2, 32)
    assert mp.group_bytes == 16 * per_run and mp.fits
    assert "2 groups of 16 run(s)" in mp.line() and "56.0 GiB" in mp.line()
    # 33 runs on 2 devices: 17 per device, 10 fit (0.9 x 40 / 3.5 = 10.3) -> 2 groups of 9, padded to 2 x 9 x 2
    mp = memory.plan(cfg, per_run, 33, 2, None, (40 * GIB, "test"), HOST)
    assert (mp.per_device, mp.group, mp.groups, mp.padded) == (17, 9, 2, 36)
    # groups are whole --vmap-blocks: 10 fit, blocks of 4 -> 8 per group, 32 runs in 4 groups
    mp = memory.plan(cfg, per_run, 32, 1, 4, (40 * GIB, "test"), HOST)
    assert (mp.group, mp.groups, mp.warning) == (8, 4, None)
    # an explicit block above what fits is kept, with a warning
    mp = memory.plan(cfg, per_run, 32, 1, 16, (40 * GIB, "test"), HOST)
    assert (mp.group, mp.groups) == (16, 2) and mp.warning.startswith("warning: --vmap-block 16")
    with pytest.raises(memory.OutOfMemory, match=r"needs 3\.50 GiB of train state; a device has 3\.00 GiB"):
        memory.plan(cfg, per_run, 1, 1, None, (3 * GIB, "test"), HOST)
    with pytest.raises(memory.OutOfMemory, match=r"32 runs .* need 112.0 GiB .* the host \(100.0 GiB available\)"):
        memory.plan(cfg, per_run, 32, 1, None, (80 * GIB, "test"), 100 * GIB)


def test_refine_shrinks_the_group_when_temporaries_do_not_fit():
    cfg = jmarl.make_config("lan", "smax_3s5z")
    mp = memory.plan(cfg, GIB, 32, 1, None, (40 * GIB, "test"), HOST)
    assert (mp.group, mp.groups) == (32, 1)  # the state alone: 0.9 x 40 = 36 runs fit
    compiled = {"argument": 32 * GIB, "output": 32 * GIB, "alias": 32 * GIB, "temp": 30 * GIB, "generated_code": 0,
                "need": 62 * GIB}
    smaller = memory.refine(mp, compiled)
    # compiled, 32 runs need 62 GiB: 32 x 40 x 0.97 / 62 = 20.03 -> 20 fit; 32 runs -> 2 groups of 16
    assert (smaller.group, smaller.groups) == (16, 2)
    assert memory.refine(mp, {**compiled, "temp": 0, "need": 32 * GIB}) is None  # fits
    one = memory.plan(cfg, GIB, 1, 1, None, (40 * GIB, "test"), HOST)
    assert memory.refine(one, compiled) is None  # one run cannot shrink: check_fits refuses it
    with pytest.raises(memory.OutOfMemory, match="1 run\\(s\\) need 62.0 GiB per device once compiled"):
        memory.check_fits(cfg, dataclasses.replace(one, compiled=compiled))


def test_state_bytes_by_hand():
    """A LAN run on smax_3s5z (float32 replay) and a QMIX run on predator-prey (bfloat16 replay): the
    replay buffer's bytes from the env's sizes, and the run's state is the buffer plus a little."""
    for algo, env, dtype in (("lan", "smax_3s5z", "float32"), ("qmix", "predator_prey", "bfloat16")):
        cfg = jmarl.make_config(algo, env, buffer_dtype=dtype)
        s = envs.make(env).spec
        c, t, n, a = cfg.buffer_size, s.episode_limit, s.num_agents, s.num_actions
        item = 4 if dtype == "float32" else 2
        by_hand = c * ((t + 1) * (n * s.obs_dim + s.state_dim) * item  # obs and state, T+1 rows
                       + (t + 1) * n * a  # availability, bool
                       + t * n * 1  # actions, int8 (fewer than 128 actions)
                       + t * (4 + 1 + 1)  # reward float32, terminated and mask bool
                       + 1)  # complete
        state = abstract_state(cfg, (), 1)
        assert memory.tree_bytes(state.buffer) - memory.tree_bytes((state.buffer.write_slot, state.buffer.write_step,
                                                                    state.buffer.pointer)) == by_hand
        per_run = memory.tree_bytes(state)
        assert by_hand < per_run < by_hand * 1.01
    # smax_3s5z, 5,000 episodes of 101 x (8 x 205 + 192) floats: 3.50 GiB per seed
    assert math.isclose(memory.tree_bytes(abstract_state(jmarl.make_config("lan", "smax_3s5z"), (), 1)) / GIB, 3.50,
                        abs_tol=0.01)


# A value learner whose state is mostly replay (a big buffer of one-step episodes) and that compiles fast:
# 16 updates of 4 env steps, 8 chunks of 2 updates, a checkpoint every 2 chunks.
GROUPED = dict(buffer_size=20_000, batch_size=8, hidden_dim=8, num_envs=4, eval_every=2, eval_episodes=4,
               total_steps=64)
EVERY = dict(plots=False, checkpoint_every=4)


def train_grouped(base: str) -> None:
    """Four seeds: vectorised two by two on one device (--vmap-block 2, no limit); in two groups of two under
    a device limit; and in groups again, interrupted after chunk 3 (checkpointed at chunk 2) and resumed.
    Prints the last two runs' log lines."""
    base = Path(base)
    config = jmarl.make_config("vdn", "matrix_qtran", **GROUPED)
    runner.run(config, seeds=4, out_dir=base / "whole", vmap_block=2, log=lambda line: None, **EVERY)
    per_run = memory.tree_bytes(abstract_state(config, (), 1))
    os.environ[memory.LIMIT_VARIABLE] = str(int(2.8 * per_run))  # 0.9 x 2.8 = 2.52 runs' state: 2 fit
    runner.run(config, seeds=4, out_dir=base / "grouped", log=print, **EVERY)
    progress = []

    def interrupt_after_three(line):
        if line.startswith("["):
            progress.append(line)
            if len(progress) == 3:
                raise KeyError("stop")

    try:
        runner.run(config, seeds=4, out_dir=base / "cut", log=interrupt_after_three, **EVERY)
    except KeyError:
        pass
    else:
        raise AssertionError("the run was not interrupted")
    runner.run(config, seeds=4, out_dir=base / "cut", resume=True, log=print, **EVERY)


@pytest.fixture(scope="module")
def grouped_runs(tmp_path_factory):
    """:func:`train_grouped` in a process that compiles as users do: the grouped and the vmap-block programs
    differ in shape, and only the default code generation makes them agree bit for bit."""
    base = tmp_path_factory.mktemp("grouped")
    here = Path(__file__).resolve().parent
    code = f"import sys; sys.path[:0] = [{str(here)!r}, {str(here.parent)!r}]; import test_memory; " \
           f"test_memory.train_grouped({str(base)!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env=users_compile_environment(), cwd=here.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return base, proc.stdout.splitlines()


def same_results(a, b):
    for name in ("metrics.jsonl", "metrics.csv", "summary.json"):
        assert (a / name).read_text() == (b / name).read_text()
    (_, x, _, _), (_, y, _, _) = (run_dir.load_checkpoint(d) for d in (a, b))
    leaves_x, leaves_y = jax.tree.leaves(x), jax.tree.leaves(y)
    assert len(leaves_x) == len(leaves_y) > 10
    for u, v in zip(leaves_x, leaves_y, strict=True):
        assert u.shape[0] == 4
        np.testing.assert_array_equal(u, v)  # replay, params, optimiser, env states: bit for bit


def test_grouped_run_equals_vmap_block(grouped_runs):
    base, lines = grouped_runs
    assert any("2 groups of 2 run(s) per device" in line for line in lines), lines
    same_results(base / "whole", base / "grouped")


def test_grouped_run_resumes_exactly(grouped_runs):
    base, lines = grouped_runs
    assert any("resumed" in line and "at chunk 2/8" in line for line in lines), lines
    same_results(base / "grouped", base / "cut")


def test_one_run_too_big_exits_before_compiling(monkeypatch, capsys):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "1GiB")

    def forbidden(*args, **kwargs):
        raise AssertionError("compiled although one run cannot fit")

    monkeypatch.setattr(jmarl.program, "PerDevice", forbidden)
    jmarl.program.compile_program.cache_clear()
    with pytest.raises(SystemExit) as exit_info:
        run_cli.main(["--algo", "lan", "--env", "smax_3s5z", "--no-save"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "needs 3.50 GiB of train state; a device has 1.00 GiB" in err and "buffer_size" in err


def test_check_prints_the_plan(monkeypatch, capsys):
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "80GiB")
    assert run_cli.main(["--algo", "lan", "--env", "smax_3s5z", "--seeds", "32", "--check"]) == 0
    plan = json.loads(capsys.readouterr().out)["memory"][0]
    assert (plan["runs_per_device"], plan["runs_per_device_at_once"], plan["groups"]) == (32, 16, 2)
    assert math.isclose(plan["per_run_gib"], 3.50, abs_tol=0.01) and plan["available_gib"] == 80
    assert plan["available_from"] == memory.LIMIT_VARIABLE and "2 groups of 16" in plan["line"]


@pytest.mark.slow  # a LAN compile (40 s); the fast suite checks the same aliasing and temporaries on VDN
def test_lan_chunk_holds_one_copy_of_the_replay_buffer():
    """The chunk donates the train state (every argument byte aliases an output) and its temporaries are a
    small fraction of the replay buffer: no second copy of it anywhere in the program."""
    config = jmarl.make_config("lan", "matrix_qtran", buffer_size=200_000, batch_size=8, num_envs=4, eval_every=2,
                               eval_episodes=4, total_steps=400)
    prog = compile_program(program_spec(config, (), 2, 1, None))
    c = prog.memory.compiled
    buffer = memory.tree_bytes(prog.abstract_state.buffer)
    assert buffer > 0.85 * memory.tree_bytes(prog.abstract_state)
    assert c["alias"] == c["argument"] - memory.tree_bytes(()) and c["alias"] >= buffer
    assert c["temp"] < 0.25 * buffer, (c, buffer)
    jmarl.program.compile_program.cache_clear()


def test_out_of_memory_is_one_line():
    cfg = jmarl.make_config("lan", "smax_3s5z")
    mp = memory.plan(cfg, int(3.5 * GIB), 32, 1, None, (80 * GIB, "test"), HOST)
    err = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 11.56GiB.\n"
                                     "BufferAssignment OOM Debugging. ...")
    oom = memory.out_of_memory(err, cfg, mp)
    assert isinstance(oom, memory.OutOfMemory) and "\n" not in str(oom)
    assert "allocating 11.56GiB" in str(oom) and "buffer_size" in str(oom) and "2 groups of 16" in str(oom)
    assert memory.out_of_memory(jax.errors.JaxRuntimeError("INTERNAL: something else"), cfg, mp) is None

    with pytest.raises(memory.OutOfMemory):
        with runner._device_memory(cfg, type("P", (), {"memory": mp})()):
            raise err


def test_bytes_limit_from_the_allocator(monkeypatch):
    class Device:
        platform = "gpu"

        def memory_stats(self):
            return {"bytes_limit": 100 * GIB, "bytes_in_use": GIB}

    monkeypatch.delenv(memory.LIMIT_VARIABLE, raising=False)
    assert memory.device_available(Device()) == (99 * GIB, "gpu allocator limit")
    monkeypatch.setenv(memory.LIMIT_VARIABLE, "1.5GiB")
    assert memory.device_available(Device()) == (int(1.5 * GIB), memory.LIMIT_VARIABLE)
    assert memory.parse_bytes("500MB") == 500 * 10**6 and memory.parse_bytes("2e9") == 2 * 10**9
    with pytest.raises(jmarl.config.ConfigError, match="JMARL_DEVICE_MEMORY"):
        memory.parse_bytes("lots")


def test_cli_keeps_the_users_memory_fraction(monkeypatch):
    monkeypatch.delenv(memory.FRACTION_VARIABLE, raising=False)
    memory.use_more_device_memory()
    import os

    assert os.environ[memory.FRACTION_VARIABLE] == memory.CLI_FRACTION
    monkeypatch.setenv(memory.FRACTION_VARIABLE, "0.5")
    memory.use_more_device_memory()
    assert os.environ[memory.FRACTION_VARIABLE] == "0.5"


def test_vmap_block_writes_blocks_in_place():
    """With --vmap-block the blocks write their state into the donated arrays: the temporaries hold one
    block's state (plus activations), not the two more copies of every run's state lax.map made."""
    config = jmarl.make_config("vdn", "matrix_qtran", **GROUPED)
    jmarl.program.compile_program.cache_clear()
    prog = compile_program(program_spec(config, (), 4, 1, 2))
    state = memory.tree_bytes(prog.abstract_state)
    c, init = prog.memory.compiled, memory.analysis(prog.init.executables[0])
    jmarl.program.compile_program.cache_clear()
    assert c["alias"] == c["argument"] and c["alias"] >= state
    assert c["temp"] < 0.75 * state, (c, state)  # one block of two runs is half the state; lax.map: 1.9 x
    assert init["temp"] < 0.05 * state, (init, state)
