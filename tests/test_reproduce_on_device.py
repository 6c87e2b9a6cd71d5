"""experiments/reproduce_on_device.sh: a reproduction stopped in one call continues in the next from the
packed progress, and what is packed is what a run needs to continue (its latest checkpoint, none once done)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "reproduce_on_device.sh"


def call(out: Path, **env: str) -> subprocess.CompletedProcess:
    """One call of the script in its --tiny form, on this machine's python, nothing installed, nothing to
    restore unless REPRO_IN says where."""
    full = {**os.environ, "PYTHON": sys.executable, "WHEELS_INSTALL": "never", "REPRO_IN": str(out / "none"), **env}
    return subprocess.run(["bash", str(SCRIPT), str(out), "--tiny"], cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=600)


def packed(out: Path) -> list[str]:
    """The member names of the progress archive (its parts joined)."""
    joined = out / "joined.tgz"
    joined.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("progress.tgz.*"))))
    with tarfile.open(joined) as archive:
        return sorted(m.name.removeprefix("./") for m in archive.getmembers() if m.isfile())


def steps_lines(out: Path) -> list[str]:
    return (out / "steps.txt").read_text().splitlines()


def test_a_reproduction_stopped_in_one_call_continues_in_the_next(tmp_path):
    first, second = tmp_path / "out1", tmp_path / "out2"
    plan = {"REPRO_PLAN": "dpo_mpe_spread"}
    # first call: every reproduction stops after its first chunk (DPO at 320 of its 640 env steps)
    r = call(first, REPRO_DIR=str(tmp_path / "machine1"), REPRO_TIME_LIMIT_MIN="0.0001", **plan)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(line.startswith("dpo_mpe_spread") and "rc=75" in line for line in steps_lines(first))
    names = packed(first)
    assert "dpo_mpe_spread/dpo/metrics.jsonl" in names and "logs/dpo_mpe_spread.log" in names
    assert any(n.startswith("dpo_mpe_spread/dpo/checkpoints/") for n in names)
    assert not any(n.startswith("xla_cache") for n in names)  # the compile cache travels apart
    assert (first / "xla_cache.tgz").exists()
    assert not (first / "reports.md").read_text()

    # second call, on a "fresh machine": restores from the first call's files and finishes
    r = call(second, REPRO_DIR=str(tmp_path / "machine2"), REPRO_IN=str(first), **plan)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = steps_lines(second)
    assert any(line.startswith("restore") and "progress.tgz" in line for line in lines)
    assert any(line.startswith("dpo_mpe_spread") and "rc=0" in line for line in lines)
    run = tmp_path / "machine2" / "dpo_mpe_spread"
    rows = [json.loads(line) for line in (run / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({row["env_steps"] for row in rows}) == [320, 640]  # the first piece's rows kept
    pieces = json.loads((run / "pieces.json").read_text())
    assert [p["finished"] for p in pieces] == [False, True]
    assert "DPO ends above IPPO" in (second / "reports.md").read_text()
    names = packed(second)
    assert "dpo_mpe_spread/reproduction.md" in names
    assert not any("/checkpoints/" in n for n in names)  # finished runs need none


def test_only_the_latest_checkpoint_of_an_unfinished_run_is_packed(tmp_path):
    machine = tmp_path / "machine"
    for run, planned, reached in (("p/done", 100, 100), ("p/going", 100, 60)):
        d = machine / run
        for step in (2, 4, 10):
            (d / "checkpoints" / str(step) / "state").mkdir(parents=True)
            (d / "checkpoints" / str(step) / "state" / "data").write_text("x")
        (d / "config.json").write_text(json.dumps({"planned_env_steps": planned}))
        (d / "summary.json").write_text(json.dumps({"per_seed": [{"env_steps": reached}] * 2}))
    (machine / "p" / "pieces.json").write_text("[]")
    (machine / "xla_cache").mkdir()
    (machine / "xla_cache" / "entry").write_text("compiled")
    out = tmp_path / "out"
    r = call(out, REPRO_DIR=str(machine), REPRO_PLAN="no_such_preset")
    assert r.returncode == 0, r.stdout + r.stderr
    names = packed(out)
    assert [n for n in names if "/checkpoints/" in n] == ["p/going/checkpoints/10/state/data"]
    assert "p/done/summary.json" in names and "p/going/config.json" in names
    assert "p (to continue): env steps per seed: none yet" in r.stdout


def test_a_damaged_progress_archive_stops_the_call_before_anything_trains(tmp_path):
    """Parts of two calls mixed in REPRO_IN do not unpack: training from nothing would then pack over the
    progress, so the call stops (exit 2) and writes no archive."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "progress.tgz.00").write_bytes(b"not a tar archive")
    out = tmp_path / "out"
    r = call(out, REPRO_DIR=str(tmp_path / "machine"), REPRO_IN=str(tmp_path / "in"))
    assert r.returncode == 2
    assert "nothing trained" in (out / "steps.txt").read_text()
    assert not list(out.glob("progress.tgz.*")) and not (tmp_path / "machine" / "lan_smax_3m").exists()
