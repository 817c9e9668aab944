"""The code stays in modules of a readable size: none over 600 lines (design.md), in src/, tests/,
benchmarks/ or scripts/ (Python scripts there have no `.py`: they are known by their shebang)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 600
FOLDERS = ("src", "tests", "benchmarks", "scripts")


def python_files(folder: Path) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or ".venv" in path.parts or "__pycache__" in path.parts:
            continue
        if path.suffix == ".py":
            found.append(path)
        elif not path.suffix and path.read_bytes()[:64].split(b"\n")[0].endswith(b"python3"):
            found.append(path)  # a script: `#!/usr/bin/env python3`
    return found


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines())


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_module_over_600_lines(folder: str) -> None:
    files = python_files(REPO / folder)
    assert files, f"no Python files found in {folder}/"
    too_long = {
        str(path.relative_to(REPO)): lines
        for path in files
        if (lines := line_count(path)) > MAX_LINES
    }
    assert not too_long, f"split these along their responsibilities: {too_long}"


def test_the_check_counts_lines_as_wc_does(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "script").write_text("#!/usr/bin/env python3\n" + "x = 1\n" * 3)
    (tmp_path / "shell").write_text("#!/usr/bin/env bash\necho\n")
    assert [p.name for p in python_files(tmp_path)] == ["long.py", "script"]
    assert line_count(tmp_path / "long.py") == MAX_LINES + 1
