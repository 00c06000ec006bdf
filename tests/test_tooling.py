"""The project's tooling agrees with itself: CI workflow, pre-commit hooks, extras and the README's commands.

Offline equivalents of the pre-commit hooks that need no network run here too (end of file, trailing whitespace,
YAML, file size, notebook outputs), so CI enforces what the hooks would fix at commit time.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: tomli, which pytest itself requires there
    import tomli as tomllib

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
PYPROJECT = ROOT / "pyproject.toml"
#: check-added-large-files' default limit.
LARGE_KB = 500
#: README.md stays a starter's page; everything longer lives in docs/.
README_BYTES = 20_000
#: The README's sections, in this order (the Quickstart's two bash blocks come first: .ci/run runs them).
README_SECTIONS = [
    "Quickstart",
    "What it is",
    "Layout",
    "Using it",
    "Predict",
    "Add your own network",
    "Add your own dataset",
    "More",
]


def readme_bash_block(n: int) -> str:
    """The N-th fenced bash block of README.md, as .ci/run extracts it."""
    blocks = re.findall(r"^```bash\n(.*?)^```$", (ROOT / "README.md").read_text(), re.M | re.S)
    return blocks[n - 1].strip()


def user_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def test_workflow_runs_the_readme_test_command_on_both_pythons() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the bare key `on` as the boolean True
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert job["strategy"]["matrix"]["python-version"] == ["3.10", "3.12"]  # strings: 3.10 unquoted is 3.1
    runs = [step["run"].strip() for step in job["steps"] if "run" in step]
    assert readme_bash_block(2) in runs, "a step must run the README's test command (block 2) verbatim"
    install = next(run for run in runs if 'pip install -e ".[dev]"' in run)
    cpu_torch = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu"
    assert cpu_torch in install and install.index(cpu_torch) < install.index('pip install -e ".[dev]"')
    assert any("ruff check ." in run for run in runs) and any("ruff format --check ." in run for run in runs)


def test_ci_script_runs_both_readme_blocks_and_ruff() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "run_block 1" in script and "run_block 2" in script
    assert "ruff check . && ruff format --check ." in script
    assert readme_bash_block(2) == "source .venv/bin/activate && pytest"


def test_pre_commit_hooks_and_ruff_pin_agree() -> None:
    config = yaml.safe_load(PRE_COMMIT.read_text())
    hooks = {hook["id"]: repo for repo in config["repos"] for hook in repo["hooks"]}
    expected = {"ruff-check", "ruff-format", "nbstripout", "end-of-file-fixer", "trailing-whitespace", "check-yaml"}
    assert expected | {"check-added-large-files"} <= set(hooks)
    assert all(re.fullmatch(r"v?\d+\.\d+\.\d+", repo["rev"]) for repo in config["repos"]), "pin released tags"
    dev = pyproject()["project"]["optional-dependencies"]["dev"]
    (ruff_pin,) = [req for req in dev if req.startswith("ruff")]
    assert hooks["ruff-check"]["rev"] == "v" + ruff_pin.removeprefix("ruff==")


def test_dev_extra_pulls_in_export_and_search() -> None:
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    assert {"export", "search", "dev"} <= set(extras)
    assert f"{project['name']}[export,search]" in extras["dev"]
    core = " ".join(project["dependencies"])
    assert "onnx" not in core and "optuna" not in core, "the core install stays lean"


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def test_files_pass_the_offline_hooks() -> None:
    """end-of-file-fixer, trailing-whitespace, check-yaml and check-added-large-files would change or refuse
    nothing; notebooks are committed without outputs (nbstripout)."""
    problems = []
    for path in tracked_files():
        name = path.relative_to(ROOT)
        data = path.read_bytes()
        if len(data) > LARGE_KB * 1024:
            problems.append(f"{name}: {len(data) // 1024} kB (> {LARGE_KB} kB)")
        if b"\0" in data[:8000]:
            continue  # binary
        text = data.decode("utf-8")
        if text and (not text.endswith("\n") or text.endswith("\n\n")):
            problems.append(f"{name}: must end with exactly one newline")
        lines = enumerate(text.splitlines(), 1)
        problems += [f"{name}:{i}: trailing whitespace" for i, line in lines if line[-1:].isspace()]
        if path.suffix in (".yaml", ".yml"):
            yaml.safe_load(text)
        if path.suffix == ".ipynb":
            for cell in json.loads(text)["cells"]:
                if cell.get("outputs") or cell.get("execution_count") is not None:
                    problems.append(f"{name}: a cell has outputs or an execution count (run nbstripout)")
    assert not problems, "\n".join(problems)


def test_readme_add_your_own_code_passes_ruff() -> None:
    """The code users copy from the README is as clean as the repository's."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed")
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```python\n(# (my_\w+\.py)\n.*?)^```$", readme, re.M | re.S)
    assert len(blocks) >= 2
    for code, name in blocks:
        for command in (["check"], ["format", "--check"]):
            result = subprocess.run(
                [ruff, *command, "--stdin-filename", name, "-"], input=code, cwd=ROOT, capture_output=True, text=True
            )
            assert result.returncode == 0, f"README's {name}: ruff {' '.join(command)}\n{result.stdout}"


def test_readme_is_short_ordered_and_points_to_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= README_BYTES, f"README.md is {len(readme.encode())} bytes (> {README_BYTES})"
    assert re.findall(r"^## (.*)$", readme, re.M) == README_SECTIONS
    quickstart = readme.split("\n## ")[1]
    assert quickstart.count("```bash\n") == 2, "the first two bash blocks (.ci/run's) are the Quickstart's"
    docs = sorted(path.name for path in (ROOT / "docs").glob("*.md"))
    assert docs, "docs/ holds the detail the README points to"
    unlinked = [name for name in docs if f"(docs/{name}" not in readme]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_doc_links_resolve() -> None:
    """Every relative link of README.md and docs/*.md names an existing file and, with #, one of its headings."""
    broken = []
    for page in user_docs():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+://", target):
                continue
            name, _, fragment = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and path.suffix == ".md":
                headings = re.findall(r"^#+ (.*)$", path.read_text(), re.M)
                if fragment not in {anchor(heading) for heading in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_user_docs_never_name_the_shared_folder() -> None:
    """Users have no ../shared: commands use data/ (the default) or a folder of their own."""
    named = [str(page.relative_to(ROOT)) for page in user_docs() if "../shared" in page.read_text()]
    assert not named, f"../shared appears in {named}"
