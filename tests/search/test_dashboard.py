"""optuna-dashboard serves the smoke study: trials and the attributes a reviewer needs, over its HTTP API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT
from tests.helpers.studies import WAIT_S, assert_one_line_error, wait_for

EXE = Path(sys.executable).with_name("optuna-dashboard")
DASHBOARD = str(EXE) if EXE.is_file() else shutil.which("optuna-dashboard")
HOST = "127.0.0.1"  # loopback only


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def get(url: str) -> Any:
    """GET a JSON document."""
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def dashboard(smoke_study: Path, tmp_path: Path) -> Iterator[str]:
    """optuna-dashboard on the smoke study, on a free loopback port; yields its base URL, then stops it."""
    if DASHBOARD is None:
        pytest.skip("optuna-dashboard is not installed (pip install -e '.[dashboard]')")
    port = free_port()
    with open(tmp_path / "dashboard.log", "w+") as log:
        proc = subprocess.Popen([DASHBOARD, f"sqlite:///{smoke_study / 'study.db'}", "--host", HOST, "--port",
                                 str(port), "--server", "wsgiref", "--artifact-dir", str(smoke_study / "artifacts")],
                                stdout=log, stderr=subprocess.STDOUT)
        base = f"http://{HOST}:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"optuna-dashboard exited with {proc.returncode}: {log.read()[-2000:]}")
                try:
                    get(f"{base}/api/meta")
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if time.monotonic() > deadline:
                        pytest.fail("optuna-dashboard did not answer within 60 s")
                    time.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def attrs(items: list[dict[str, str]]) -> dict[str, str]:
    """The dashboard's [{key, value}] attribute list as a dict (values are strings, JSON for lists and dicts)."""
    return {a["key"]: a["value"] for a in items}


def test_dashboard_serves_trials_and_their_attributes(dashboard: str, smoke_study: Path) -> None:
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke_study / 'study.db'}")
    summaries = get(f"{dashboard}/api/studies")["study_summaries"]
    (summary,) = [s for s in summaries if s["study_name"] == "smoke"]
    assert summary["directions"] == ["maximize"]
    study_attrs = attrs(summary["user_attrs"])
    assert study_attrs["budget_params"] == "60000" and study_attrs["fingerprint"] == study.user_attrs["fingerprint"]

    detail = get(f"{dashboard}/api/studies/{summary['study_id']}")
    trials = {t["number"]: t for t in detail["trials"]}
    assert sorted(trials) == [t.number for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    (base,) = [t for t in complete if "baseline" in t.user_attrs]  # smoke.yaml's hand design, trained first
    assert attrs(trials[base.number]["user_attrs"])["baseline"] == "plain"  # what the dashboard shows
    for t in complete:
        served = trials[t.number]
        got = attrs(served["user_attrs"])
        assert served["state"] == "Complete" and served["values"] == [t.values[0]]
        assert int(got["params"]) == t.user_attrs["params"] and int(got["flops"]) == t.user_attrs["flops"]
        assert int(got["receptive_field"]) == t.user_attrs["receptive_field"]
        assert json.loads(got["arch"]) == t.user_attrs["arch"] and json.loads(got["train"]) == t.user_attrs["train"]
        assert {p["name"] for p in served["params"]} == set(t.params)
        assert len(served["intermediate_values"]) == 2  # one report per epoch
    rejected = [t for t in study.trials if "rejected" in t.user_attrs]
    assert rejected, "the smoke study is built to have rejected trials"
    for t in rejected:
        served = trials[t.number]
        assert served["state"] == "Pruned"
        assert attrs(served["user_attrs"])["rejected"] == t.user_attrs["rejected"]
    reasons = [t.user_attrs["rejected"] for t in rejected]
    assert any(r.startswith("receptive field") for r in reasons), reasons  # the rule conftest sets


def test_dashboard_names_the_metric_and_opens_artifacts_and_notes(dashboard: str, smoke_study: Path) -> None:
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke_study / 'study.db'}")
    (summary,) = [s for s in get(f"{dashboard}/api/studies")["study_summaries"] if s["study_name"] == "smoke"]
    detail = get(f"{dashboard}/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == ["val_acc"] and study.metric_names == ["val_acc"]
    trials = {t["number"]: t for t in detail["trials"]}
    for t in study.trials:
        served = trials[t.number]
        short = attrs(served["user_attrs"])["arch_short"]
        assert re.match(r"\w+ B=\[", short) and len(short) < 70 and "{" not in short  # short, not JSON
        if t.state == optuna.trial.TrialState.COMPLETE:
            (artifact,) = served["artifacts"]
            assert artifact["filename"] == f"{t.number:05d}.json" and artifact["mimetype"] == "application/json"
            url = f"{dashboard}/artifacts/{summary['study_id']}/{served['trial_id']}/{artifact['artifact_id']}"
            with urllib.request.urlopen(url, timeout=10) as r:
                record = json.loads(r.read())
            assert record["number"] == t.number and record["state"] == "complete"
            assert record["val_acc"] == t.values[0]
        elif "rejected" in t.user_attrs:
            assert served["note"]["body"].startswith("**Rejected before building**")
            assert t.user_attrs["rejected"] in served["note"]["body"] and served["artifacts"] == []


def dashboard_cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.Popen:
    """`python -m search dashboard ARGS` as a user starts it."""
    return subprocess.Popen([sys.executable, "-m", "search", "dashboard", *args], env=child_env(ROOT, **env), **kw)


def test_sigterm_reaches_optuna_dashboard(tmp_path: Path) -> None:
    """The wrapper execs optuna-dashboard (same pid): a SIGTERM to it never leaves a server holding the port."""
    bin_dir, pid_file = tmp_path / "bin", tmp_path / "dashboard.pid"
    bin_dir.mkdir()
    fake = bin_dir / "optuna-dashboard"  # stands for the real one: says its pid, then serves (sleeps)
    fake.write_text('#!/bin/sh\necho $$ > "$PID_FILE.tmp" && mv "$PID_FILE.tmp" "$PID_FILE"\nexec sleep 600\n')
    fake.chmod(0o755)
    (tmp_path / "study.db").write_bytes(b"")
    proc = dashboard_cli([str(tmp_path)], {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PID_FILE": str(pid_file)})
    try:
        pid = int(wait_for(lambda: pid_file.is_file() and pid_file.read_text().strip(), WAIT_S, "the dashboard"))
        assert pid == proc.pid, "optuna-dashboard runs as a child the signal would not reach"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT_S) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_storage_is_one_line_before_the_dashboard_starts(tmp_path: Path) -> None:
    proc = dashboard_cli([str(tmp_path), "--storage", "foo://bar"], {}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=WAIT_S)
    assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), "'foo://bar'",
                          "unknown database 'foo'")
