"""Optional loggers (jmarl/loggers.py): ``run.py --tensorboard`` writes event files whose values are the per-seed
means of the metrics.jsonl rows at each chunk's env_steps; ``--wandb`` (offline) keeps the same history in a
W&B run directory; a missing backend is one line and exit 2."""

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.run import main
from jmarl import loggers
from jmarl.config import ConfigError

TINY = ["--algo", "ippo", "--env", "matrix_dpo4", "--total-steps", "40", "--set", "num_envs=2", "--set",
        "num_steps=5", "--set", "hidden_dim=4", "--set", "eval_every=1", "--set", "eval_episodes=1",
        "--seeds", "2", "--no-plots", "--no-checkpoints", "--no-compile-cache"]


def read_events(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of the TensorBoard event files under ``directory``: tag -> [(step, value)]."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def expected_history(rows: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """Per-seed means of each metric at each env_steps, tagged as the loggers tag them."""
    out: dict[str, list[tuple[int, float]]] = {}
    for step in sorted({r["env_steps"] for r in rows}):
        chunk = [r for r in rows if r["env_steps"] == step]
        for key in chunk[0]:
            if key in ("env_steps", "seed"):
                continue
            tag = key if "/" in key else f"eval/{key}"
            out.setdefault(tag, []).append((step, float(np.mean([r[key] for r in chunk]))))
    return out


def wandb_records(path: Path) -> list[bytes]:
    """The records of a W&B run file: a 7-byte file header, then 32 KiB blocks of records, each with a 7-byte
    header (crc32, length, type: 1 whole, 2 first, 3 middle, 4 last part of a record)."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    records, parts, at = [], b"", 7
    while at + 7 <= len(data):
        if block - at % block < 7:  # too little left in the block for a header: padding
            at += block - at % block
            continue
        _, length, kind = struct.unpack("<IHB", data[at:at + 7])
        if kind == 0 and length == 0:
            break
        parts += data[at + 7:at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            records.append(parts)
            parts = b""
    return records


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tensorboard_event_files_hold_the_metrics_rows(tmp_path):
    pytest.importorskip("tensorboardX")
    out = tmp_path / "run"
    assert main(TINY + ["--tensorboard", "--out", str(out), "--sweep", "lr=1e-3,3e-4"]) == 0
    for point in ("lr=0.001", "lr=0.0003"):
        leaf = out / point
        rows = read_rows(leaf / "metrics.jsonl")
        expected = expected_history(rows)
        logged = read_events(leaf / "tensorboard")
        assert set(logged) == set(expected) and "eval/return" in logged
        assert any(tag.startswith("train/") for tag in logged)
        for tag, points in expected.items():
            assert [s for s, _ in logged[tag]] == [s for s, _ in points] == [10, 20, 30, 40]
            np.testing.assert_allclose([v for _, v in logged[tag]], [v for _, v in points], rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # W&B's writer is a separate service process: its timing under a loaded CI was not reliable
def test_wandb_offline_run_keeps_the_history(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "jmarl-test")
    out = tmp_path / "run"
    assert main(TINY + ["--wandb", "--out", str(out)]) == 0
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    (history_file,) = run_dir.glob("run-*.wandb")
    from wandb.proto import wandb_internal_pb2

    def read_history():
        history = []
        for data in wandb_records(history_file):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            if record.WhichOneof("record_type") == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
        return history

    # W&B's service process may still be writing the file when finish() returns: wait for it (bounded)
    deadline = time.monotonic() + 60
    while len(history := read_history()) < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
    expected = expected_history(read_rows(out / "metrics.jsonl"))
    assert [h["_step"] for h in history] == [10, 20, 30, 40]
    for tag, points in expected.items():
        np.testing.assert_allclose([h[tag] for h in history], [v for _, v in points], rtol=1e-6, atol=1e-6)
    assert [h["env_steps"] for h in history] == [10, 20, 30, 40]


def test_a_missing_backend_is_one_line_naming_the_install(monkeypatch, capsys):
    real = loggers.importlib.util.find_spec
    monkeypatch.setattr(loggers.importlib.util, "find_spec",
                        lambda name: None if name == "tensorboardX" else real(name))
    with pytest.raises(SystemExit) as exit_info:
        main(TINY + ["--tensorboard"])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'jmarl[logging]'" in lines[0] and "tensorboardX" in lines[0]
    with pytest.raises(ConfigError, match="jmarl\\[logging\\]"):
        loggers.Loggers(["tensorboard"], [Path("x")], ["x"], [{}])


def test_loggers_need_a_results_directory(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(TINY + ["--tensorboard", "--no-save"])
    assert exit_info.value.code == 2 and "drop --no-save" in capsys.readouterr().err


def test_chunk_values_are_seed_means_tagged_by_kind():
    rows = [{"env_steps": 8, "seed": 0, "return": 1.0, "won": True, "train/loss": 2.0},
            {"env_steps": 8, "seed": 1, "return": 3.0, "won": False, "train/loss": 4.0}]
    assert loggers.chunk_values(rows) == {"eval/return": 2.0, "train/loss": 3.0}
