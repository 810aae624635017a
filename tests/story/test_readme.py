"""The README's examples run as written: docs that match the code."""
import re

from conftest import ROOT


def python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = [b for b in python_blocks() if "gradmem.capture()" in b]
    assert blocks, "the README shows gradmem.capture() from Python"
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    cap = namespace["cap"]
    t = cap.tensors.set_index("name")
    assert t.loc["error", "saved_by"] == "PowBackward0.self"
    assert t.loc["w.grad", "role"] == "param_grad"
    assert (tmp_path / "reports" / "mine" / "tensors.csv").exists()
    assert (tmp_path / "reports" / "mine" / "report.html").exists()


def test_readme_commands_match_ci():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = re.search(r"```bash\n(pip install [^\n]*pytest[^\n]*)\n```", readme).group(1)
    assert test_command in ci
    assert re.search(r"```bash\n(pip install [^\n]*gradmem profile scenarios/[^\n]*)\n```", readme)
