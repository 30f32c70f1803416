"""docs/errors.md must list every error code with its name (one table for CLI, API and protocol)."""

from __future__ import annotations

import re
from pathlib import Path

from mediaengine.sdk.errors import ERRORS_BY_CODE

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"


def test_every_code_is_documented_with_its_name() -> None:
    rows = dict(re.findall(r"^\| (\d+) \| (\w+) \|", DOC.read_text(), flags=re.M))
    for code, cls in ERRORS_BY_CODE.items():
        assert rows.get(str(code)) == cls.__name__.rstrip("_"), f"docs/errors.md lacks {code} {cls.__name__}"
    assert len(rows) == len(ERRORS_BY_CODE)
