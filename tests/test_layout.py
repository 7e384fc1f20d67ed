"""The layout's dependency rules, checked in fresh interpreters.

A stage module may run in a worker on another machine (the scale-out design): it imports
the stage contract, never the scheduler, the store's database driver or Panel.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

STAGE_MODULES = [
    "pipeline.jobs.contract",
    "pipeline.convert.stage",
    "pipeline.calibration.stage",
    "pipeline.imaging.stage",
    "pipeline.photometry.stage",
]
FORBIDDEN = ("apscheduler", "duckdb", "panel", "bokeh")


def loaded_modules(module: str) -> set[str]:
    """Top-level packages loaded after importing ``module`` in a fresh interpreter."""
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", STAGE_MODULES)
def test_a_stage_module_loads_neither_scheduler_store_driver_nor_panel(module):
    loaded = loaded_modules(module)
    assert "pipeline" in loaded  # the probe really imported something of ours
    assert not loaded & set(FORBIDDEN), f"{module} pulls in {sorted(loaded & set(FORBIDDEN))}"


def test_the_probe_sees_a_forbidden_import():
    # The runner itself is allowed the scheduler and the store: the probe must say so.
    assert {"apscheduler", "duckdb"} <= loaded_modules("pipeline.jobs.runner")


def test_pipeline_never_imports_views_or_app():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "pipeline"
    offenders = [str(p.relative_to(root.parent)) for p in root.rglob("*.py")
                 if any(line.lstrip().startswith(("from views", "import views", "from app",
                                                  "import app"))
                        for line in p.read_text().splitlines())]
    assert offenders == []


def test_production_code_does_not_import_the_simulator():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for folder in ("pipeline", "views", "app"):
        for p in (root / folder).rglob("*.py"):
            rel = p.relative_to(root)
            if rel.parts[:2] == ("pipeline", "simulate"):
                continue  # the simulator itself, and its science validation
            if any("pipeline.simulate" in line and "import" in line
                   for line in p.read_text().splitlines()):
                offenders.append(str(rel))
    assert offenders == ["app/cli.py"]  # `contimg simulate` is the one production caller
