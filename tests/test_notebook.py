"""The notebook in docs/ runs as written, cell by cell in one namespace, with its parameters cell
pointed at a tiny study (as papermill would): a user who opens it gets no error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
from conftest import ROOT, small_study, toml_text

NOTEBOOK = ROOT / "docs" / "quickstart.ipynb"


def test_the_quickstart_notebook_runs(tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(toml_text(small_study(search={"trials": 4, "sampler": "random"})))
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"].get("tags", []), "the first code cell holds the parameters"
    namespace: dict = {}
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile('STUDY = "tiny.toml"\nTRIALS = 4\nOUT = "out"\n', "parameters", "exec"), namespace)
        for i, cell in enumerate(code[1:], start=1):
            exec(compile("".join(cell["source"]), f"{NOTEBOOK.name} cell {i}", "exec"), namespace)
    finally:
        os.chdir(here)
    assert isinstance(namespace["front"], pd.DataFrame) and len(namespace["front"]) >= 1
    assert tuple(namespace["logits"].shape) == (2, 4)
    assert (tmp_path / "out" / "report.html").is_file()
    assert (tmp_path / "out" / f"student-{namespace['best']}" / "model.onnx").is_file()
