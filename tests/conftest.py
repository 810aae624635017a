import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
sys.path.insert(0, str(ROOT))   # this checkout's gradmem, whatever is pip-installed


def run_cli(*args, cwd=None, check=False, timeout=300, env=None):
    """Run the real CLI in a fresh process, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "gradmem", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"gradmem {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def seed_reports(tmp_path_factory):
    """The three seed scenarios profiled through the CLI; {name: report folder}."""
    out = {}
    for name in ("seed_one_weight", "seed_two_weights", "seed_two_rows"):
        folder = tmp_path_factory.mktemp("reports") / name
        run_cli("profile", SCENARIOS / f"{name}.py", "-o", folder, "-q", check=True)
        out[name] = folder
    return out


def read_tensors(folder) -> pd.DataFrame:
    return pd.read_csv(Path(folder) / "tensors.csv", keep_default_na=False, dtype=str)


def value_of(tensors: pd.DataFrame, name: str) -> str:
    rows = tensors[tensors["name"] == name]
    assert len(rows) == 1, f"expected one storage named {name!r}, found {len(rows)}: {list(tensors['name'])}"
    return rows.iloc[0]["value"]
