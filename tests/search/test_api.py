"""The Python API (search.api): docs/python-api.md's examples run as written, and a dataset of the user's own,
named by import path or given as an object, goes through the checks and loaders of a built-in one."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

import search
from search import api, run
from search.config import SearchConfig, load_config
from search.data import custom
from search.data.datasets import dataset_info, make_loaders
from search.runner import SearchOptions
from tests.helpers.processes import child_env
from tests.helpers.spaces import ROOT, write_space

DOC = ROOT / "docs" / "python-api.md"
MODULE_MARK = "# mydata.py"  # the doc's block that is a module of the user's, not code to run


def doc_blocks() -> list[str]:
    """The ```python blocks of docs/python-api.md, in order."""
    return re.findall(r"^```python\n(.*?)^```", DOC.read_text(), flags=re.S | re.M)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The doc's mydata.py written to a folder on sys.path (and forgotten after the test)."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    module = next(b for b in doc_blocks() if b.startswith(MODULE_MARK))
    (folder / "mydata.py").write_text(module + "\n\ndef wrong(root):\n    return [1, 2]\n\n\n"
                                      "def broken(root):\n    raise FileNotFoundError(root)\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "mydata", raising=False)
    return folder


def test_the_doc_examples_run(tmp_path: Path, user_module: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example of docs/python-api.md, in order, in one namespace, in a fresh folder (export: with the mcu
    extra only)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    for k in range(2):
        Image.fromarray(np.full((20, 24, 3), 60 * k, dtype=np.uint8)).save(tmp_path / "images" / f"{k}.png")
    has_mcu = importlib.util.find_spec("ai_edge_quantizer") is not None
    scope: dict = {}
    ran = 0
    for block in doc_blocks():
        if block.startswith(MODULE_MARK) or ("search.export(" in block and not has_mcu):
            continue
        exec(compile(block, str(DOC), "exec"), scope)  # noqa: S102 (the doc's own examples)
        ran += 1
        if "study" in scope and ran == 1:  # the smoke search
            assert len(scope["study"].trials) >= 2 and scope["study"].best_value > 0
    assert ran >= 3
    done = scope["done"]
    assert all(p.is_file() for paths in done.models.values() for p in paths) and done.summary["trials"]
    assert (tmp_path / "results" / "smoke" / "report.html").is_file()
    labels = scope["labels"]
    assert labels.csv.is_file() and labels.probs.shape == (2, 10) and len(labels.files) == 2
    by_path, by_object = (optuna.load_study(study_name=name, storage=f"sqlite:///results/{name}/study.db")
                          for name in ("mine", "mine_object"))
    assert by_path.user_attrs["data_identity"] == {"dataset": "mydata:make", "num_classes": 2,
                                                   "class_names": ["stripes", "checks"], "image_size": 16}
    assert by_object.user_attrs["data_identity"]["dataset"] == "object"
    assert "dataset: object" in (tmp_path / "results" / "mine_object" / "config.yaml").read_text()


@pytest.mark.parametrize(("dataset", "says"), [
    ("pkg/mydata.py:make", "unknown dataset 'pkg/mydata.py:make' (expected one of cifar10"),  # never imported
    ("mydata", "or module:function, the import path of your own dataset function"),  # no function named
    ("no_such_module_here:make", "cannot import no_such_module_here: no module named 'no_such_module_here'"),
    ("mydata:nope", "module mydata has no function 'nope'"),
    ("mydata:wrong", "wrong() returned 'list'; expected a search.DatasetSplits or a tuple"),
    ("mydata:broken", "broken('data') raised FileNotFoundError: data"),
])
def test_a_bad_dataset_import_path_is_one_line_before_any_study(tmp_path: Path, user_module: Path, dataset: str,
                                                                says: str, capsys: pytest.CaptureFixture) -> None:
    space = write_space(tmp_path, {"data": {"dataset": dataset}})
    assert run.main([str(space), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
    assert not (tmp_path / "r").exists()


def test_a_given_validation_split_is_the_validation_set(tmp_path: Path) -> None:
    """val given: the loaders validate on exactly it; labels and odd-sized images are checked and squared."""
    def pairs(n: int, size: tuple[int, int]) -> list[tuple[np.ndarray, int]]:
        return [(np.full((*size, 3), k, dtype=np.uint8), k % 3) for k in range(n)]

    splits = search.DatasetSplits(train=pairs(30, (12, 12)), val=pairs(7, (12, 18)), test=pairs(5, (12, 12)),
                                  class_names=["a", "b", "c"])
    data = custom.given_dataset(load_config(write_space(tmp_path)).data, splits)
    info = dataset_info(data)
    assert (info.num_classes, info.image_size, info.class_names) == (3, 12, ("a", "b", "c"))
    loaders = make_loaders(data, [], 8, seed=0, test=True)
    assert len(loaders.val.dataset) == 7 and len(loaders.test.dataset) == 5  # type: ignore[union-attr, arg-type]
    bad = search.DatasetSplits(train=[(np.zeros((12, 12, 3), np.uint8), 3)], val=None, test=pairs(2, (12, 12)),
                               class_names=["a", "b", "c"])
    with pytest.raises(search.UserError, match=r"train\[0\]'s label 3 is not in \[0, 3\)"):
        dataset_info(custom.given_dataset(data, bad))


def test_the_api_refuses_what_the_cli_cannot_express(tmp_path: Path) -> None:
    """Workers rerun the YAML, so an object stays in this process; overrides are a mapping or --set strings."""
    splits = search.DatasetSplits(train=[], val=None, test=[], class_names=["a", "b"])
    with pytest.raises(search.UserError, match="each worker reruns the search from its YAML file"):
        search.run_search(write_space(tmp_path), dataset=splits, workers=2, results_dir=tmp_path / "r")
    with pytest.raises(search.UserError, match="overrides: expected a mapping"):
        search.run_search(write_space(tmp_path), overrides="train.epochs=1")  # type: ignore[arg-type]
    assert not (tmp_path / "r").exists()


def test_workers_rerun_the_call_as_the_command_line_it_equals(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """run_search(workers=2): each worker process reruns a command line that loads the same config and options."""
    space = write_space(tmp_path)
    called = {}

    def search(cfg: SearchConfig, opts: SearchOptions, log: object) -> None:
        called.update(cfg=cfg, opts=opts)

    monkeypatch.setattr(api, "search", search)
    api.run_search(space, overrides={"train.epochs": 2, "train.lr": 0.5}, dataset="mydata:make", n_trials=3,
                   timeout=60.0, study_name="2024", data_root=str(tmp_path / "d"), results_dir=tmp_path / "r",
                   device="cpu", workers=2, heartbeat=5, grace=30)
    cfg, opts = called["cfg"], called["opts"]
    args = run.parse_args(list(opts.argv))
    assert run.config_from_args(args).raw == cfg.raw and cfg.study_name == "2024"  # a name, as typed
    assert (cfg.data.dataset, cfg.data.root, cfg.search.n_trials) == ("mydata:make", str(tmp_path / "d"), 3)
    assert run.options(args) == opts


def test_import_search_reaches_every_api_name() -> None:
    """`search.X` for each name of search.api, looked up lazily by search/__init__.py."""
    assert set(search.API) == set(api.__all__)
    assert all(getattr(search, name) is getattr(api, name) for name in api.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        search.nothing_here  # noqa: B018


def test_the_type_stub_declares_what_import_search_holds() -> None:
    """search/__init__.pyi, which mypy reads for `import search`, names every API name and every public name of
    search/__init__.py, and nothing else: a name added to one and not the other fails here."""
    stub = ast.parse((ROOT / "search" / "__init__.pyi").read_text())
    declared = {a.asname for n in stub.body if isinstance(n, ast.ImportFrom) and n.level for a in n.names} | {
        n.name for n in stub.body if isinstance(n, ast.FunctionDef)} | {
        n.target.id for n in stub.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    public = {name for name, v in vars(search).items()  # (its submodules are attributes once imported)
              if not name.startswith("_") and not isinstance(v, types.ModuleType)} - {"Any"}
    assert declared == set(search.API) | public


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is in the [test] extra")
def test_a_users_mypy_checks_calls_through_import_search(tmp_path: Path) -> None:
    """A user's code calling search.retrain with a wrong type fails their mypy; a right call passes."""
    (tmp_path / "use.py").write_text('import search\n\nsearch.retrain("results/s", seeds=2)\nsearch.retrain(3)\n')
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--follow-imports=silent",
                           str(tmp_path / "use.py")], capture_output=True, text=True, cwd=ROOT,
                          env=child_env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.findall(r"use\.py:(\d+): error", done.stdout) == ["4"], done.stdout


GOOD = [(np.zeros((12, 12, 3), np.uint8), 0), (np.zeros((12, 12), np.uint8), 1)]  # RGB and greyscale


@pytest.mark.parametrize(("splits", "says"), [
    (search.DatasetSplits(GOOD, None, GOOD, "ab"), "class_names must be a list of strings"),
    (search.DatasetSplits(GOOD, None, GOOD, ["a", "a"]), "at least 2 classes, each once"),
    (search.DatasetSplits([(np.zeros((3, 12, 12), np.float32), 0)], None, GOOD, ["a", "b"]),
     "train[0]'s image is ndarray float32 (3, 12, 12); expected a PIL image or an (H, W, 3) uint8 numpy array"),
    (search.DatasetSplits([np.zeros((12, 12, 3), np.uint8)], None, GOOD, ["a", "b"]),
     "train[0] is 'ndarray'; expected an (image, label) pair"),
    (search.DatasetSplits(GOOD, None, iter(GOOD), ["a", "b"]), "test has no length; expected a map-style"),
    (search.DatasetSplits(GOOD, None, [(GOOD[0][0], "b")], ["a", "b"]), "test[0]'s label is 'b'; expected an int"),
    (search.DatasetSplits(GOOD, [], GOOD, ["a", "b"]), "val holds no images"),
    (search.DatasetSplits([(np.zeros((4, 6, 3), np.uint8), 0)], None, GOOD, ["a", "b"]), "4 px on its shorter side"),
], ids=["names-str", "names-twice", "tensor-like", "no-pair", "no-index", "label-str", "val-empty", "tiny"])
def test_a_dataset_breaking_the_contract_is_one_line(tmp_path: Path, splits: search.DatasetSplits,
                                                     says: str) -> None:
    data = custom.given_dataset(load_config(write_space(tmp_path)).data, splits)
    with pytest.raises(search.UserError) as caught:
        dataset_info(data)
    assert says in str(caught.value) and "\n" not in str(caught.value)
