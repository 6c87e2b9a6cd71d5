"""Runner reliability: the numerical guard stops a diverging run before it logs or checkpoints the bad
chunk; SIGINT / SIGTERM stop after a chunk with a checkpoint, and the resumed run ends exactly like an
uninterrupted one; interrupted checkpoint writes are skipped, damaged or foreign checkpoints refused with
a message that names what is wrong."""

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jmarl
import jmarl.program
import jmarl.spec
from jmarl.checkpoint import CheckpointError, Checkpoints, DamagedCheckpoint, fingerprint, is_complete
from jmarl.config import defaults_of_later_fields
from jmarl.core import make_chunk
from jmarl.run_dir import load_checkpoint
from jmarl.runner import Interrupted, NonFiniteError, first_nonfinite, run
from jmarl.spec import run_identity, seed_keys

ROOT = Path(__file__).resolve().parents[1]

# ----- a stand-in learner that compiles in a blink ----------------------------------------------


@flax.struct.dataclass
class FakeState:
    params: dict
    target_params: dict
    env_steps: jax.Array
    update_count: jax.Array
    trigger: jax.Array  # the (1-based) update whose loss is infinite; params are NaN from the next one on


class Diverging:
    """Loss +inf at update ``trigger``, parameters NaN from update ``trigger + 1``. With ``lr > 0.01`` the
    trigger is 6 + (last word of the seed's key) % 5; otherwise it never comes."""

    steps_per_update = 10

    def __init__(self, config):
        self.config = config

    def init(self, key):
        trigger = jnp.where(self.config.lr > 0.01, 6 + (key[-1] % 5).astype(jnp.int32), 10**6)
        w = jnp.zeros(3, jnp.float32)
        return FakeState({"w": w}, {"w": w}, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), trigger)

    def update(self, state):
        count = state.update_count + 1
        w = jnp.where(count > state.trigger, jnp.nan, state.params["w"] + 1.0)
        metrics = {"loss": jnp.where(count >= state.trigger, jnp.inf, 1.0), "grad_norm": jnp.float32(0.5),
                   "episodes": count}  # an integer metric is not checked
        state = state.replace(params={"w": w}, env_steps=state.env_steps + self.steps_per_update, update_count=count)
        return state, metrics

    def evaluate(self, state):
        return {"return": state.update_count.astype(jnp.float32)}


def fake_state(trigger, target_nan=False):
    w = jnp.zeros(3, jnp.float32)
    target = jnp.full(3, jnp.nan) if target_nan else w
    return FakeState({"w": w}, {"w": target}, jnp.int32(0), jnp.int32(0), jnp.int32(trigger))


# total_steps 160 = 16 updates of 10 steps = 4 chunks of 4 updates (a config no other test compiles)
FAKE_CONFIG = jmarl.make_config("dpo", "matrix_dpo4", total_steps=160, eval_every=4, num_envs=2, num_steps=5,
                                hidden_dim=4, eval_episodes=1)


@pytest.fixture
def fake_learner(monkeypatch):
    monkeypatch.setattr(jmarl.spec, "build_learner", Diverging)
    jmarl.program.compile_program.cache_clear()
    yield
    jmarl.program.compile_program.cache_clear()


def test_chunk_reports_the_first_nonfinite_update_per_metric_and_params():
    chunk = jax.jit(jax.vmap(make_chunk(Diverging(FAKE_CONFIG), 8)))
    states = jax.tree.map(lambda *xs: jnp.stack(xs), fake_state(2), fake_state(8), fake_state(100),
                          fake_state(100, target_nan=True))
    _, m = chunk(states)
    # trigger 2: loss inf in update 2 (index 1), params NaN after update 3 (index 2); trigger 8: loss at index 7,
    # params would be NaN only in update 9; target_params NaN from the start: "params" at index 0.
    np.testing.assert_array_equal(m["nonfinite/train/loss"], [1, 7, -1, -1])
    np.testing.assert_array_equal(m["nonfinite/params"], [2, -1, -1, 0])
    np.testing.assert_array_equal(m["nonfinite/train/grad_norm"], [-1, -1, -1, -1])
    assert "nonfinite/train/episodes" not in m
    assert m["nonfinite/params"].dtype == jnp.int32


def test_first_nonfinite_picks_the_earliest_update_and_ignores_padding():
    metrics = {"nonfinite/train/loss": np.array([-1, 5, 3, 0]), "nonfinite/params": np.array([-1, 2, 3, 0]),
               "train/loss": np.zeros(4)}
    # run 3 is padding (a copy of the last real run): excluded; run 1's params at 2 beat run 2's at 3
    assert first_nonfinite(metrics, runs=3) == (1, 2, ["params"], 2)
    metrics["nonfinite/params"] = np.array([-1, 5, -1, -1])
    assert first_nonfinite(metrics, runs=3) == (2, 3, ["train/loss"], 2)
    metrics["nonfinite/train/loss"] = np.array([-1, 5, -1, -1])
    assert first_nonfinite(metrics, runs=3) == (1, 5, ["train/loss", "params"], 1)
    assert first_nonfinite({k: np.full(3, -1) for k in metrics if k.startswith("nonfinite/")}, runs=3) is None


def _expected_trigger(seeds):
    keys = np.asarray(seed_keys(0, seeds))
    return 6 + keys[:, -1] % 5


def test_runner_stops_before_logging_or_saving_a_nonfinite_chunk(fake_learner, tmp_path):
    triggers = _expected_trigger(3)
    seed = int(np.argmin(triggers))
    update = int(triggers[seed])
    bad_chunk = (update - 1) // 4  # 0-based chunk holding that update
    with pytest.raises(NonFiniteError) as err:
        run(FAKE_CONFIG, seeds=3, out_dir=tmp_path, sweep={"lr": (1e-3, 0.1)}, checkpoint_every=4, plots=False,
            log=lambda line: None)
    message = str(err.value)
    assert (f"dpo on matrix_dpo4, seed {seed} at sweep point lr=0.1: train/loss became NaN or infinite in update "
            f"{update} of 16 (env steps {update * 10})") in message
    assert f"last good checkpoint: {(tmp_path / 'checkpoints' / str(bad_chunk)).resolve()}" in message
    assert Checkpoints(tmp_path / "checkpoints").steps() == list(range(1, bad_chunk + 1))
    for point in ("lr=0.001", "lr=0.1"):
        rows = [json.loads(line) for line in (tmp_path / point / "metrics.jsonl").read_text().splitlines()]
        assert sorted({r["env_steps"] for r in rows}) == [40 * (c + 1) for c in range(bad_chunk)]
        assert all(np.isfinite(r["train/loss"]) for r in rows)


def test_cli_exits_3_with_one_line_on_nonfinite_training(fake_learner, capsys):
    from experiments.run import main

    code = main(["--algo", "dpo", "--env", "matrix_dpo4", "--total-steps", "160", "--seeds", "2", "--set", "lr=0.5",
                 "--set", "eval_every=4", "--set", "num_envs=2", "--set", "num_steps=5", "--set", "hidden_dim=4",
                 "--set", "eval_episodes=1", "--no-save"])
    assert code == 3
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    triggers = _expected_trigger(2)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"run.py: dpo on matrix_dpo4, seed {int(np.argmin(triggers))}: train/loss became "
                               f"NaN or infinite in update {int(triggers.min())} of 16")
    assert lines[0].endswith("checkpoints are off")  # no --out


def _signal_self_after(chunks, signals):
    """A log function that sends ``signals`` to this process when the ``chunks``-th progress line arrives."""
    seen = []

    def log(line):
        if line.startswith("["):
            seen.append(line)
            if len(seen) == chunks:
                for sig in signals:
                    os.kill(os.getpid(), sig)

    return log


def test_signal_without_results_directory_stops_after_the_chunk(fake_learner):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted) as err:
        run(FAKE_CONFIG, seeds=1, log=_signal_self_after(2, [signal.SIGTERM]))
    assert err.value.signum == signal.SIGTERM
    assert str(err.value) == "interrupted at env steps 80; nothing was saved to resume from (no results directory)"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def _rows(directory):
    return (directory / "metrics.jsonl").read_text()


def test_an_interrupted_sequential_sweep_names_its_top_directory_and_resumes_exactly(fake_learner, tmp_path):
    """num_envs changes the program: two programs in turn; stopped in the first, resumed from the top."""
    sweep = {"num_envs": (2, 4), "lr": (1e-3, 2e-3)}
    full = run(FAKE_CONFIG, seeds=2, out_dir=tmp_path / "full", sweep=sweep, plots=False, log=lambda line: None)
    cut = tmp_path / "cut"
    with pytest.raises(Interrupted) as err:
        run(FAKE_CONFIG, seeds=2, out_dir=cut, sweep=sweep, plots=False, log=_signal_self_after(3, [signal.SIGTERM]))
    assert str(err.value) == f"interrupted at env steps 120; resume with: python experiments/run.py --resume {cut}"
    assert err.value.env_steps == 120  # what reproduce.py reports
    assert Checkpoints(cut / "num_envs=2" / "checkpoints").steps()[-1] == 3
    assert not (cut / "num_envs=4").exists()  # the second program never started
    assert run(FAKE_CONFIG, seeds=2, out_dir=cut, sweep=sweep, resume=True, plots=False, log=lambda line: None) == full
    for leaf in ("num_envs=2/lr=0.001", "num_envs=2/lr=0.002", "num_envs=4/lr=0.001", "num_envs=4/lr=0.002"):
        assert _rows(cut / leaf) == _rows(tmp_path / "full" / leaf)


def test_a_second_sigint_aborts_at_once(fake_learner, tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        run(FAKE_CONFIG, seeds=1, out_dir=tmp_path, plots=False, log=_signal_self_after(1, [signal.SIGINT] * 2))
    assert signal.getsignal(signal.SIGINT) == before


def _ctrl_c_at(prefix):
    """A log function that raises KeyboardInterrupt (Ctrl-C's effect outside the chunk loop) at a line."""
    def log(line):
        if line.startswith(prefix):
            raise KeyboardInterrupt

    return log


def _tree(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() if p.is_file() else None
            for p in sorted(directory.rglob("*"))}


def test_ctrl_c_before_the_first_chunk_removes_only_what_the_run_created(fake_learner, tmp_path, monkeypatch):
    fresh = tmp_path / "new" / "fresh"
    with pytest.raises(Interrupted) as err:  # while compiling: only checkpoints/ exists yet
        run(FAKE_CONFIG, seeds=1, out_dir=fresh, plots=False, log=_ctrl_c_at("compiling"))
    assert (str(err.value), err.value.signum) == ("interrupted before the first chunk; nothing was saved",
                                                  signal.SIGINT)
    assert not (tmp_path / "new").exists()  # nor the folder it made above it

    existing = tmp_path / "existing"
    (existing / "notes").mkdir(parents=True)
    (existing / "notes" / "todo.txt").write_text("keep me")
    (existing / "empty").mkdir()
    prepare = jmarl.runner.run_dir.prepare_files

    def prepare_then_ctrl_c(*args):  # after config.json and the empty metrics files are written
        prepare(*args)
        assert (existing / "config.json").exists() and (existing / "metrics.jsonl").exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(jmarl.runner.run_dir, "prepare_files", prepare_then_ctrl_c)
    with pytest.raises(Interrupted, match="^interrupted before the first chunk; nothing was saved$"):
        run(FAKE_CONFIG, seeds=1, out_dir=existing, plots=False, log=lambda line: None)
    assert _tree(existing) == {"empty": None, "notes": None, "notes/todo.txt": b"keep me"}


def test_ctrl_c_before_a_resumed_run_trains_changes_nothing(fake_learner, tmp_path):
    run(FAKE_CONFIG, seeds=1, out_dir=tmp_path, plots=False, log=lambda line: None)
    before = _tree(tmp_path)
    with pytest.raises(Interrupted) as err:
        run(FAKE_CONFIG, seeds=1, out_dir=tmp_path, resume=True, plots=False, log=_ctrl_c_at("compiling"))
    assert str(err.value) == (f"interrupted before the first chunk; resume with: python experiments/run.py "
                              f"--resume {tmp_path}")
    assert _tree(tmp_path) == before


@pytest.mark.slow  # timing-sensitive: in the parallel fast suite the child twice finished before SIGINT landed
def test_ctrl_c_while_compiling_exits_130_with_one_line(tmp_path):
    """A real process: SIGINT while XLA compiles (the "compiling" line is flushed before it starts)."""
    out, cache = tmp_path / "run", tmp_path / "xla"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JMARL_COMPILE_CACHE"] = str(cache)
    proc = subprocess.Popen(CLI + ["--out", str(out), "--no-compile-cache"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("compiling "):
            proc.send_signal(signal.SIGINT)
            break
    stdout, stderr = proc.communicate(timeout=300)
    assert seen and seen[-1].startswith("compiling dpo on matrix_dpo4: 1 seed(s) = 1 runs on 1 device(s); ")
    assert seen[-1].rstrip().endswith("(this can take a minute)")
    assert proc.returncode == 130, stderr[-2000:]
    # the line, once, and last (a library warning printed earlier by a dependency is not ours to judge here)
    lines = stderr.splitlines()
    assert lines[-1:] == ["run.py: interrupted before the first chunk; nothing was saved"], stderr[-2000:]
    assert stderr.count("interrupted") == 1 and "Traceback" not in stdout + stderr, stderr[-2000:]
    assert not out.exists()  # not even the empty checkpoints/ it had made
    assert not cache.exists()  # --no-compile-cache


# ----- checkpoint files ----------------------------------------------------------------------------


def _state(value):
    return {"w": np.full((2, 3), value, np.float32), "n": np.array(value, np.int32)}


def _two_checkpoints(directory):
    ckpt = Checkpoints(directory)
    ckpt.save(1, _state(1), {"chunks_done": 1})
    ckpt.save(2, _state(2), {"chunks_done": 2})
    ckpt.close()


def _strip_completion_marks(step_dir):
    (step_dir / "commit_success.txt").unlink()
    meta = json.loads((step_dir / "_CHECKPOINT_METADATA").read_text())
    meta["commit_timestamp_nsecs"] = None
    (step_dir / "_CHECKPOINT_METADATA").write_text(json.dumps(meta))


def test_interrupted_writes_are_skipped_and_moved_aside_by_a_writer(tmp_path):
    _two_checkpoints(tmp_path)
    shutil.copytree(tmp_path / "2", tmp_path / "3.orbax-checkpoint-tmp")  # a write cut before its rename
    shutil.copytree(tmp_path / "2", tmp_path / "4")
    _strip_completion_marks(tmp_path / "4")  # a step directory never finalised
    assert is_complete(tmp_path / "2") and not is_complete(tmp_path / "4")
    reader = Checkpoints(tmp_path)
    assert reader.steps() == [1, 2]
    assert [d.name for d in reader.incomplete()] == ["3.orbax-checkpoint-tmp", "4"]
    state, record = reader.restore(_state(0))
    assert record == {"chunks_done": 2} and int(state["n"]) == 2
    reader.close()
    assert (tmp_path / "4").is_dir()  # a reader leaves the directory alone

    writer = Checkpoints(tmp_path, writer=True)
    assert [p.name for p in writer.moved_aside] == ["4.incomplete"]
    writer.save(3, _state(3), {"chunks_done": 3})
    writer.save(4, _state(4), {"chunks_done": 4})
    writer.wait()
    assert writer.steps() == [2, 3, 4]  # keep 3
    assert int(writer.restore(_state(0))[0]["n"]) == 4
    writer.close()


def test_only_incomplete_writes_give_a_clear_error(tmp_path):
    (tmp_path / "1.orbax-checkpoint-tmp").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"no checkpoint under .* \(only incomplete writes: 1.orbax-checkpoint"):
        Checkpoints(tmp_path).restore(_state(0))


def test_a_truncated_array_file_is_refused_with_what_to_do(tmp_path):
    _two_checkpoints(tmp_path)
    data = max((f for f in (tmp_path / "2" / "state").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(DamagedCheckpoint) as err:
        Checkpoints(tmp_path).restore(_state(0))
    assert (err.value.step, err.value.older, err.value.step_dir) == (2, 1, (tmp_path / "2").resolve())
    message = str(err.value)
    assert message.startswith(f"checkpoint 2 under {tmp_path.resolve()} is damaged (its ")
    assert message.endswith("could not be read); the latest older complete checkpoint is 1 (present: [1, 2])")
    assert "pybind11" not in message and "Error" not in message  # no internals: they stay in __cause__


def test_resume_from_a_damaged_checkpoint_says_how_to_continue(fake_learner, tmp_path):
    full = run(FAKE_CONFIG, seeds=1, out_dir=tmp_path / "full", plots=False, log=lambda line: None)
    out = tmp_path / "cut"
    run(FAKE_CONFIG, seeds=1, out_dir=out, checkpoint_every=4, plots=False, log=lambda line: None)
    record = out / "checkpoints" / "4" / "record" / "metadata"
    record.write_bytes(record.read_bytes()[: record.stat().st_size // 2])
    step = (out / "checkpoints" / "4").resolve()
    with pytest.raises(CheckpointError) as err:
        run(FAKE_CONFIG, seeds=1, out_dir=out, resume=True, plots=False, log=lambda line: None)
    assert str(err.value) == (f"cannot resume: checkpoint 4 under {step.parent} is damaged (its record could not be "
                              f"read); to continue from checkpoint 3, move it aside (mv {step} {step}.damaged) and "
                              f"resume again")
    step.rename(f"{step}.damaged")  # what the message says
    assert run(FAKE_CONFIG, seeds=1, out_dir=out, resume=True, plots=False, log=lambda line: None) == full
    assert _rows(out) == _rows(tmp_path / "full")


# Orbax reads a checkpoint's arrays concurrently; after one read fails, the others used to print "RuntimeError:
# Event loop is closed" tracebacks (and "Exception ignored in: <coroutine ...>") when they finished, in about half
# of the tries. Five restores of a checkpoint with many truncated array files, in a fresh process.
LATE_READS = """
import sys
from pathlib import Path
import numpy as np
from jmarl.checkpoint import Checkpoints, DamagedCheckpoint
directory = Path(sys.argv[1])
state = {f"w{i}": np.random.default_rng(i).random((64, 512), np.float32) for i in range(64)}
ckpt = Checkpoints(directory)
ckpt.save(1, state, {"chunks_done": 1})
ckpt.save(2, state, {"chunks_done": 2})
ckpt.close()
for f in (directory / "2" / "state" / "ocdbt.process_0" / "d").iterdir():
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
for attempt in range(5):
    ckpt = Checkpoints(directory)
    try:
        ckpt.restore({k: np.zeros_like(v) for k, v in state.items()})
    except DamagedCheckpoint as err:
        print(err.step, err.part, err.older)
    finally:
        ckpt.close()
"""


def test_a_failed_restore_leaves_no_tracebacks_behind(tmp_path):
    proc = subprocess.run([sys.executable, "-c", LATE_READS, str(tmp_path / "c")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["2 arrays 1"] * 5
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr[-3000:]


def test_a_foreign_checkpoint_names_the_keys_that_differ(tmp_path):
    identity = run_identity(FAKE_CONFIG, 2, 0, {})
    ckpt = Checkpoints(tmp_path)
    ckpt.save(1, _state(1), {"chunks_done": 1, "fingerprint": fingerprint(identity), "run": identity})
    ckpt.save(2, _state(2), {"chunks_done": 2, "fingerprint": "0123456789abcdef"})  # a record without its run
    ckpt.wait()
    other = jmarl.make_config("dpo", "hallway", **{**{k: getattr(FAKE_CONFIG, k) for k in ("total_steps", "eval_every",
                              "num_envs", "num_steps", "eval_episodes")}, "hidden_dim": 16})
    with pytest.raises(CheckpointError) as err:
        ckpt.restore(_state(0), step=1, expect=run_identity(other, 3, 0, {"lr": (0.1, 0.2)}))
    message = str(err.value)
    assert "belong to a different run (checkpoint 1): env: stored matrix_dpo4, given hallway; " in message
    assert "hidden_dim: stored 4, given 16" in message and "seeds: stored 2, given 3" in message
    assert "sweep: stored {}, given {'lr': [0.1, 0.2]}" in message
    assert ckpt.restore(_state(0), step=1, expect=identity)[1]["chunks_done"] == 1
    with pytest.raises(CheckpointError, match="its config, seeds or sweep differ"):
        ckpt.restore(_state(0), step=2, expect=identity)
    ckpt.close()



def test_a_checkpoint_from_before_a_later_field_resumes_at_its_default(tmp_path):
    """OW-QMIX checkpoints written before the QPLEX sizes existed (fields marked ``absent_means_default``) belong to
    the run at those sizes' defaults, and to no other; a field without the mark (ReMIX's weight mapping, whose
    default changed what runs do) still refuses them."""
    config = jmarl.make_config("ow_qmix", "matrix_qtran")
    later = defaults_of_later_fields(config)
    assert later == {"qplex_embed_dim": 64, "qplex_heads": 4, "qplex_layers": 2, "qplex_adv_embed": 64}
    identity = run_identity(config, 2, 0, {})
    older = {**identity, "config": {k: v for k, v in identity["config"].items() if k not in later}}
    without_mapping = {**identity, "config": {k: v for k, v in identity["config"].items() if k != "weight_mapping"}}
    ckpt = Checkpoints(tmp_path)
    ckpt.save(1, _state(1), {"chunks_done": 1, "fingerprint": fingerprint(older), "run": older})
    ckpt.save(2, _state(2), {"chunks_done": 2, "fingerprint": fingerprint(without_mapping), "run": without_mapping})
    ckpt.wait()
    assert ckpt.restore(_state(0), step=1, expect=identity, later_fields=later)[1]["chunks_done"] == 1
    with pytest.raises(CheckpointError, match=r"qplex_adv_embed: stored \(absent\), given 64"):
        ckpt.restore(_state(0), step=1, expect=identity)  # without the marks: refused, as before
    bigger = run_identity(dataclasses.replace(config, qplex_heads=8), 2, 0, {})
    with pytest.raises(CheckpointError, match=r"\(checkpoint 1\): qplex_heads: stored \(absent\), given 8; resume"):
        ckpt.restore(_state(0), step=1, expect=bigger, later_fields=later)
    with pytest.raises(CheckpointError, match=r"weight_mapping: stored \(absent\), given mean"):
        ckpt.restore(_state(0), step=2, expect=identity, later_fields=later)
    ckpt.close()

# ----- a real process, stopped by a signal and resumed --------------------------------------------

CHUNKS = 400  # of one update x 32 env steps each: a few ms a chunk, so the signal lands mid-run
CLI = [sys.executable, str(ROOT / "experiments" / "run.py"), "--algo", "dpo", "--env", "matrix_dpo4",
       "--total-steps", str(CHUNKS * 32), "--set", "num_envs=4", "--set", "num_steps=8", "--set", "hidden_dim=8",
       "--set", "epochs=1", "--set", "eval_every=1", "--set", "eval_episodes=2", "--no-plots",
       "--checkpoint-every", "0"]


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """(environment with a shared compilation cache, the uninterrupted run's directory)."""
    base = tmp_path_factory.mktemp("signals")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(base / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    full = base / "full"
    proc = subprocess.run(CLI + ["--out", str(full)], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env, full


def _interrupt(cli_env, out, sig):
    """Start the run, send ``sig`` once metrics.jsonl has rows; (exit code, stdout, stderr)."""
    with open(out.parent / f"{out.name}.stdout", "w+") as stdout, open(out.parent / f"{out.name}.stderr", "w+") as err:
        proc = subprocess.Popen(CLI + ["--out", str(out)], stdout=stdout, stderr=err, env=cli_env, cwd=ROOT)
        deadline = time.monotonic() + 300
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and metrics.stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it logged a row"
            time.sleep(0.01)
        proc.send_signal(sig)
        code = proc.wait(timeout=120)
        stdout.seek(0)
        err.seek(0)
        return code, stdout.read(), err.read()


def _check_stopped(code, stdout, stderr, out, sig):
    assert code == 128 + sig, stderr[-2000:]
    assert (stdout + stderr).count("interrupted at env steps") == 1  # said once, by run.py
    assert "Traceback" not in stdout + stderr
    last = stderr.strip().splitlines()[-1]
    found = re.fullmatch(r"run\.py: interrupted at env steps (\d+); resume with: python experiments/run\.py "
                         r"--resume (.+)", last)
    assert found and found.group(2) == str(out), last
    steps = int(found.group(1))
    assert 0 < steps < CHUNKS * 32  # stopped mid-run ...
    assert Checkpoints(out / "checkpoints").steps() == [steps // 32]  # ... with a checkpoint of that chunk
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["env_steps"] == steps and len(rows) == steps // 32
    return steps


def _check_same_results(out, full):
    for name in ("metrics.jsonl", "metrics.csv", "summary.json"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name


def test_sigterm_stops_with_a_checkpoint_and_resume_matches_an_uninterrupted_run(cli, tmp_path):
    env, full = cli
    out = tmp_path / "cut"
    code, stdout, stderr = _interrupt(env, out, signal.SIGTERM)
    _check_stopped(code, stdout, stderr, out, signal.SIGTERM)
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--resume", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _check_same_results(out, full)


def test_sigint_stops_too_and_resume_skips_interrupted_checkpoint_writes(cli, tmp_path):
    env, full = cli
    out = tmp_path / "cut"
    code, stdout, stderr = _interrupt(env, out, signal.SIGINT)
    steps = _check_stopped(code, stdout, stderr, out, signal.SIGINT)
    # leftovers of writes cut short: one never renamed, one renamed without its completion marks (at the
    # final step, which the resumed run must still be able to write)
    done = out / "checkpoints" / str(steps // 32)
    shutil.copytree(done, out / "checkpoints" / f"{CHUNKS}.orbax-checkpoint-tmp")
    shutil.copytree(done, out / "checkpoints" / str(CHUNKS))
    _strip_completion_marks(out / "checkpoints" / str(CHUNKS))
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "run.py"), "--resume", str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"moved aside to {(out / 'checkpoints' / f'{CHUNKS}.incomplete').resolve()}" in proc.stdout
    assert f"resumed from {(out / 'checkpoints').resolve()} at chunk {steps // 32}/{CHUNKS}" in proc.stdout
    _check_same_results(out, full)
    assert Checkpoints(out / "checkpoints").steps()[-1] == CHUNKS


def test_resuming_another_runs_checkpoints_names_the_difference(cli, tmp_path):
    _, full = cli
    other = tmp_path / "other"
    shutil.copytree(full, other)
    config, _, meta, record = load_checkpoint(other)
    assert record["run"]["config"]["env"] == "matrix_dpo4" and record["run"]["seeds"] == meta["seeds"] == 1
    changed = jmarl.make_config("dpo", "matrix_dpo4", **{**{k: getattr(config, k) for k in (
        "total_steps", "num_envs", "num_steps", "epochs", "eval_every", "eval_episodes")}, "hidden_dim": 16})
    with pytest.raises(CheckpointError, match="belong to a different run .*: hidden_dim: stored 8, given 16; resume"):
        run(changed, seeds=1, out_dir=other, resume=True, plots=False, log=lambda line: None)


def test_a_real_learner_with_an_absurd_learning_rate_stops_with_exit_3(tmp_path, capsys):
    """No stand-in: DPO itself diverges at lr=1e30; the runner names it and writes no garbage rows."""
    from experiments.run import main

    out = tmp_path / "run"
    code = main(["--algo", "dpo", "--env", "matrix_dpo4", "--total-steps", "64", "--seeds", "2", "--set", "lr=1e30",
                 "--set", "num_envs=4", "--set", "num_steps=8", "--set", "hidden_dim=8", "--set", "eval_every=1",
                 "--set", "eval_episodes=1", "--out", str(out), "--no-plots"])
    assert code == 3
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert line.startswith("run.py: dpo on matrix_dpo4, seed ") and "became NaN or infinite in update 1 of 2" in line
    assert line.endswith("no checkpoint was written yet")
    assert (out / "metrics.jsonl").read_text() == ""  # the diverged chunk left no rows
    assert not (out / "summary.json").exists()
