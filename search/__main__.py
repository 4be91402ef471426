"""`resnet-search COMMAND ...` (or `python -m search COMMAND ...`): one entry point for every command."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from blocks.text import version

from . import shipped_spaces
from .cli import ArgumentParser, main_guard

USAGE = """usage: resnet-search COMMAND [ARGS...]   (or: python -m search COMMAND [ARGS...])

commands:
  run SPACE.yaml       search a space under its budget (SPACE may name a shipped space: smoke, cifar10_5m, tiny_26m)
  report RESULTS       write the HTML report of a study
  dashboard RESULTS    open optuna-dashboard on a study, with its artifacts
  retrain RESULTS      train the best trial(s) to full length, then test
  predict MODEL... --images DIR|FILE...   label new images with retrained model(s), as a CSV
  export RESULTS --trial N   a retrained model as an int8 TFLite file a microcontroller runs (the mcu extra)
  spaces               list the shipped example spaces and where they are

`resnet-search COMMAND --help` describes each; `resnet-search --version` prints the version."""


def dashboard(argv: list[str]) -> int:
    """Run optuna-dashboard on results/<study> (its study and artifacts); unknown options go to optuna-dashboard."""
    from .dashboard import artifact_dir
    from .storage import default_storage

    p = ArgumentParser(prog="resnet-search dashboard", description=dashboard.__doc__,
                                epilog="Any other option goes to optuna-dashboard unchanged (optuna-dashboard "
                                       "--help lists them).")
    p.add_argument("results", help="results/<study> folder")
    p.add_argument("--storage", help="the study's URL when it is on a server (default: RESULTS/study.db)")
    # optuna-dashboard's own options a user reaches for, named here so that --help shows them
    p.add_argument("--port", help="port to serve on (optuna-dashboard's default: 8080)")
    p.add_argument("--host", help="address to serve on (optuna-dashboard's default: 127.0.0.1; 0.0.0.0 = every "
                                  "interface, for a remote machine)")
    p.add_argument("--server", choices=["auto", "wsgiref", "gunicorn"], help="HTTP server (default: auto)")
    p.add_argument("--quiet", "-q", action="store_true", help="no request log")
    args, rest = p.parse_known_args(argv)
    rest = [*(v for k in ("port", "host", "server") if getattr(args, k) for v in (f"--{k}", getattr(args, k))),
            *(["--quiet"] if args.quiet else []), *rest]
    results = Path(args.results)
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    if not Path(exe).is_file():
        print("error: optuna-dashboard is not installed (pip install 'resnet-budget-search[dashboard]')",
              file=sys.stderr)
        return 2
    if main_guard(lambda: _check_dashboard(results, args.storage)) != 0:
        return 2
    # exec, not a child: a SIGTERM or Ctrl-C sent to this process reaches optuna-dashboard itself, which
    # would otherwise go on holding its port after the wrapper died.
    os.execv(exe, [exe, args.storage or default_storage(results), "--artifact-dir", str(artifact_dir(results)), *rest])


def spaces(argv: list[str]) -> int:
    """List the example spaces shipped with the package and where they are (give the name or the path to run)."""
    ArgumentParser(prog="resnet-search spaces", description=spaces.__doc__).parse_args(argv)
    for path in shipped_spaces():
        print(f"{path.stem:<12} {path}")
    return 0


def _check_dashboard(results: Path, storage: str | None) -> None:
    """Refuse what optuna-dashboard would only meet with a traceback: a name too long, no study.db, a bad --storage,
    a read-only study.db folder."""
    from .errors import UserError
    from .names import check_path
    from .storage import check_url

    check_path(results, "results folder")
    if storage is None and not (results / "study.db").is_file():
        raise UserError(f"'{results / 'study.db'}' is missing (for a study on a server, add --storage URL)")
    if storage is not None:
        check_url(storage)
    elif not os.access(results, os.W_OK):  # SQLite writes its journal beside study.db, even to read
        raise UserError(f"results folder '{results}' is read-only: SQLite cannot open study.db there; copy the "
                        f"folder somewhere writable")


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's main: search.run's, search.commands' (the review commands) or one here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "--version" or "--version" in rest:  # every command: `resnet-search retrain R --version` too
        print(f"resnet-budget-search {version()}")
        return 0
    if command == "run":
        from .run import main as run
        return run(rest)
    if command in ("report", "retrain", "predict", "export"):
        from .commands import export_main, predict_main, report_main, retrain_main
        review = {"report": report_main, "retrain": retrain_main, "predict": predict_main, "export": export_main}
        return review[command](rest)
    if command == "dashboard":
        return dashboard(rest)
    if command == "spaces":
        return spaces(rest)
    print(f"error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
