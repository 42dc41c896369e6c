"""What `pip install polymodal` gets: the wheel carries every data file the code reads at run time (the packaged
recipes the demo trains, the demo's reference costs, the web page, the ImageNet class names)."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "polymodal"
DATA_GLOBS = ["recipes/*.yaml", "cli/*.json", "serve/static/*", "pretrained/*.txt"]


def test_the_wheel_carries_the_recipes_and_every_data_file(tmp_path: Path) -> None:
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("polymodal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"polymodal/{p.relative_to(PACKAGE)}" for g in DATA_GLOBS for p in PACKAGE.glob(g) if p.is_file()}
    assert any(n.endswith("shapes-clip-imagenet.yaml") for n in expected)
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
