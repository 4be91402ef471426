"""What optuna-dashboard shows beyond the trials: metric names, notes on rejected trials, and artifacts.

Artifacts go through Optuna's own artifact API into a FileSystemArtifactStore in results/<study>/artifacts,
so `optuna-dashboard STORAGE --artifact-dir results/<study>/artifacts` lists and opens them per trial.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from .contained import inside

ARTIFACT_DIR = "artifacts"  # under results/<study>/
MIMETYPES = {".json": "application/json", ".csv": "text/csv", ".html": "text/html", ".pt": "application/octet-stream",
             ".onnx": "application/octet-stream"}


def artifact_dir(results: Path) -> Path:
    """results/<study>/artifacts."""
    return results / ARTIFACT_DIR


def upload(target: optuna.Study | optuna.Trial | optuna.trial.FrozenTrial, path: Path, results: Path,
           storage: optuna.storages.BaseStorage | None = None) -> str:
    """Attach a file to a trial or a study (optuna.artifacts); returns the artifact id."""
    folder = inside(results, artifact_dir(results))
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return upload_artifact(artifact_store=FileSystemArtifactStore(str(folder)), file_path=str(path),
                               study_or_trial=target, storage=storage,
                               mimetype=MIMETYPES.get(path.suffix, "application/octet-stream"))


def name_metrics(study: optuna.Study, objectives: tuple[str, ...]) -> None:
    """Show `val_acc` (and params/FLOPs) instead of "Objective 0" in the dashboard."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))


def note_rejected(trial: optuna.Trial, reason: str) -> None:
    """A note on the trial's dashboard page: rejected before building, not pruned by the pruner."""
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the dashboard extra is not installed: the `rejected` attribute still says it
        return
    save_note(trial, f"**Rejected before building** (never trained; Optuna state PRUNED): {reason}")


def attach_retrain(study: optuna.Study, number: int, results: Path, folder: Path) -> int:
    """Upload a retrained trial's files changed since the last upload (metrics, per-seed models); returns how many.

    Optuna refuses to change a finished trial, so they are artifacts of the study, named after the trial
    and seed they come from (`trial3-seed_0-model.pt`).
    """
    stamp = inside(results, folder) / ".artifacts-uploaded"  # its mtime: when this folder's files were last uploaded
    since = stamp.stat().st_mtime if stamp.is_file() else 0.0
    files = [folder / "metrics.json", *sorted(folder.glob("seed_*/model.pt")), *sorted(folder.glob("seed_*/metrics.json"))]
    fresh = [f for f in files if f.is_file() and f.stat().st_mtime > since]
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        for f in fresh:
            named = Path(tmp) / "-".join([f"trial{number}", *f.relative_to(folder).parts])
            os.link(f, named)  # the artifact takes the file's name: give it one that says where it comes from
            upload(study, named, results)
    stamp.touch()
    return len(fresh)
