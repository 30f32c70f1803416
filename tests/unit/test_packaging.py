"""What `pip install mediaengine` puts into a user's environment: one package, `mediaengine`, nothing else.

The repository keeps its folders engine/, actors/ and tools/; the wheel maps engine/ to `mediaengine` and
actors/ to `mediaengine.actors`, and leaves tools/ and tests/ out, so no top-level name can collide with
another project's `engine`, `actors` or `tools`.  The wheel is built from this checkout and installed
(without dependencies) into a fresh virtualenv, and its site-packages is listed.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_only_the_mediaengine_package(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("mediaengine-*.whl")

    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    py = env / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    before = {p.name for p in site.iterdir()}
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    added = {p.name for p in site.iterdir()} - before

    assert {n for n in added if not n.endswith(".dist-info")} == {"mediaengine"}, added
    pkg = site / "mediaengine"
    for part in ("py.typed", "sdk/actor.py", "runtime/ring.py", "cli/__main__.py", "actors/tone.py",
                 "actors/rtmp_puller.py"):
        assert (pkg / part).is_file(), f"the wheel lacks mediaengine/{part}"
    assert not any(pkg.rglob("conftest.py")) and not (pkg / "tests").exists(), "tests must not be installed"
    assert not (pkg / "tools").exists() and not (pkg / "bench").exists()
    # every actor module of the checkout is in the wheel under mediaengine.actors
    shipped = {p.name for p in (pkg / "actors").glob("*.py")}
    assert {p.name for p in (ROOT / "actors").glob("*.py")} <= shipped
    entry = next(site.glob("mediaengine-*.dist-info")) / "entry_points.txt"
    assert "mediaengine = mediaengine.cli" in entry.read_text()
    assert sysconfig.get_path("purelib") != str(site)  # really a separate environment
