"""The `hpo` console script as a user runs it: real subprocesses, and what they print and write.

Every helper passes the environment on without HPO_STORAGE, so a test's store is the one its
command names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from hpo.read.report import DATA_ID

HPO = str(Path(sys.executable).parent / "hpo")
SECRET = "pw-never-shown-4711"


def hpo(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    return subprocess.run(
        [HPO, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def hpo_many(*commands: list[str], stdins: list[str] | None = None, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Run several independent `hpo` commands at once (each pays ~1 s of imports); results in order.

    Like `hpo`, but stdin is given (empty unless ``stdins`` says otherwise, so a prompt
    can never hang) and COLUMNS is wide: piped, rich draws 80 columns and elides cells
    (`complet…`), which tables with several columns need more than.
    """
    env = {k: v for k, v in os.environ.items() if k != "HPO_STORAGE"}
    env["COLUMNS"] = "200"
    stdins = stdins or [""] * len(commands)
    procs = [
        subprocess.Popen([HPO, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
        for args in commands
    ]
    results = []
    for args, proc, stdin in zip(commands, procs, stdins):
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        results.append(subprocess.CompletedProcess([HPO, *args], proc.returncode, out, err))
    return results


def with_password(url: str) -> str:
    return make_url(url).set(password=SECRET).render_as_string(hide_password=False)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def as_json(result: subprocess.CompletedProcess):
    return json.loads(ok(result))


def assert_one_line_error(result: subprocess.CompletedProcess, expected: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert result.stdout == ""


def embedded_data(page: str) -> dict:
    """The data an `hpo report` page embeds for its figures."""
    match = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', page, re.S)
    assert match, "no embedded report data"
    return json.loads(match.group(1).replace("<\\/", "</"))
