"""What ``pip install napari-ovsam`` gives, checked without the source tree (CI runs it via scripts/test.sh).

``python scripts/smoke_wheel.py`` (with ./.venv's python):
1. copies the files of a fresh checkout (tracked, or untracked but not ignored) and builds the sdist, then the
   wheel from it, offline with the installed setuptools;
2. makes a fresh virtual environment and installs the wheel alone into it (``pip install --no-deps``); its
   third-party packages come from ./.venv's site-packages through a ``.pth`` path entry, so nothing is
   downloaded again. ./.venv's editable install is not visible there: ``.pth`` files in a folder added by a
   ``.pth`` line are not processed;
3. runs this file again inside it (``--inside``), which checks that the package, its metadata and its manifest
   come from the fresh environment, that the wheel's declared dependencies are satisfied, and then runs
   ``python -m ovsam_model.demo``, ``python -m ovsam_model.download --list``, ``npe2 validate napari-ovsam``,
   imports every manifest command, and builds the widget (the manifest's ``make_widget``) in a viewer with the
   demo model and segments and commits a box.

The widget needs an X display (run it under ``xvfb-run -a``). Exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPS_PTH = "_ovsam_smoke_dependencies.pth"
EXTRAS = ("napari", "qt")  # what the plugin needs besides the base dependencies
VOCABULARY = "nucleus\nrod\nring\ncluster"


# ------------------------------------------------------------------------------------- outside: build


def checkout_copy(dest: Path, root: Path = ROOT) -> Path:
    """Copy the files a fresh checkout of ``root`` has to ``dest`` (a stale ``*.egg-info`` from an editable
    install would otherwise feed files into the sdist that package-data misses)."""
    if not (root / ".git").exists():  # e.g. an unpacked sdist: a clean tree already
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*")
        return Path(shutil.copytree(root, dest, symlinks=True, ignore=ignore))
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = root / name
        if source.is_file() or source.is_symlink():  # not deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


def build(source: Path, out: Path, *which: str) -> dict[str, Path]:
    """Build ``which`` ("--sdist", "--wheel"; none: the sdist, then the wheel from it) offline into ``out``;
    returns {".gz": sdist, ".whl": wheel} of what was built."""
    command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), *which, str(source)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"building {source} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return {path.suffix: path for path in out.iterdir()}


def make_venv(venv: Path, wheel: Path) -> Path:
    """A fresh virtual environment with only ``wheel`` installed, then ./.venv's site-packages as a path
    entry for the dependencies (added after the install, so pip never sees the editable install)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--no-input", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    main_purelib = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (Path(purelib) / DEPS_PTH).write_text(main_purelib + "\n")
    return python


def clean_environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(
        HF_HUB_OFFLINE="1",
        OVSAM_CACHE_DIR=str(work / "cache"),
        QT_API=os.environ.get("QT_API", "pyqt6"),
        OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
        PYTHONNOUSERSITE="1",
    )
    return env


def outside(keep: Path | None) -> int:
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ovsam-smoke-")) if keep is None else keep
    try:
        tree = checkout_copy(work / "tree")
        wheel = build(tree, work / "dist")[".whl"]
        print(f"smoke: built {wheel.name} in {time.perf_counter() - start:.1f} s", flush=True)
        python = make_venv(work / "venv", wheel)
        print(
            f"smoke: fresh environment at {work / 'venv'} ({time.perf_counter() - start:.1f} s)", flush=True
        )
        result = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--inside", str(ROOT)],
            cwd=work, env=clean_environment(work), timeout=900,
        )  # fmt: skip
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    verdict = "passed" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
    print(f"smoke: wheel smoke test {verdict} in {time.perf_counter() - start:.1f} s", flush=True)
    return result.returncode


# ----------------------------------------------------------------- inside: the fresh environment
# The checks import the package under test and its dependencies inside the functions: the first check must
# run before anything is imported from where it should not be.


def check_isolation(source_root: Path) -> None:
    """the package, its metadata and its manifest come from the fresh environment, not the source tree"""
    import importlib.metadata as metadata

    import napari_ovsam
    import ovsam_model

    prefix, src = Path(sys.prefix).resolve(), (source_root / "src").resolve()
    assert src not in {Path(p).resolve() for p in sys.path if p}, f"{src} is on sys.path"
    for entry in filter(None, sys.path):  # e.g. ./.venv's editable install, had its .pth been processed
        for package in ("ovsam_model", "napari_ovsam"):
            found = Path(entry, package)
            assert not found.exists() or found.resolve().is_relative_to(prefix), f"{found} is importable"
    for module in (ovsam_model, napari_ovsam):
        assert Path(module.__file__).resolve().is_relative_to(prefix), (
            f"{module.__name__} from {module.__file__}"
        )
    dist = metadata.distribution("napari-ovsam")  # the first one on sys.path
    assert Path(str(dist.locate_file(""))).resolve().is_relative_to(prefix), f"metadata from {dist}"
    assert dist.version == ovsam_model.__version__ == napari_ovsam.__version__
    manifest = Path(str(dist.locate_file("napari_ovsam/napari.yaml")))
    assert manifest.is_file() and not manifest.is_symlink(), f"{manifest} is not a shipped file"
    from_tree = [
        name for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None) and Path(module.__file__).resolve().is_relative_to(src)
    ]  # fmt: skip
    assert not from_tree, f"imported from the source tree: {from_tree}"


def check_dependencies(source_root: Path) -> None:
    """every dependency the wheel declares (with the napari and qt extras) is installed in a matching version"""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    problems = []
    for text in metadata.requires("napari-ovsam") or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": e}) for e in ("", *EXTRAS)):
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirement} (found {version})")
    assert not problems, "unsatisfied: " + "; ".join(problems)


def check_demo(source_root: Path) -> None:
    """python -m ovsam_model.demo segments and names the sample with the shipped demo model"""
    command = [sys.executable, "-m", "ovsam_model.demo", "--device", "cpu", "--out", "demo.png"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    box_line = next(line for line in result.stdout.splitlines() if line.startswith("mean IoU"))
    box_miou = float(box_line.split()[2].rstrip(","))
    assert box_miou > 0.5 and Path("demo.png").is_file(), result.stdout  # random weights give about 0.1


def check_download_list(source_root: Path) -> None:
    """python -m ovsam_model.download --list knows the shipped demo weights"""
    command = [sys.executable, "-m", "ovsam_model.download", "--list", "demo", "ovsam_rn50x16"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ovsam_demo  [shipped with the package]" in result.stdout and sys.prefix in result.stdout, (
        result.stdout
    )
    assert "S-Lab License 1.0, non-commercial" in result.stdout, result.stdout


def check_npe2_validate(source_root: Path) -> None:
    """npe2 validate napari-ovsam"""
    command = [sys.executable, "-c", "import sys; from npe2.cli import main; sys.exit(main())"]
    result = subprocess.run(
        [*command, "validate", "napari-ovsam"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "valid" in result.stdout.lower(), result.stdout + result.stderr


def check_manifest_commands(source_root: Path) -> None:
    """every command of the installed manifest imports"""
    from npe2 import PluginManifest
    from npe2.manifest.utils import import_python_name

    manifest = PluginManifest.from_distribution("napari-ovsam")
    for command in manifest.contributions.commands:
        assert callable(import_python_name(command.python_name)), command.python_name


def check_widget(source_root: Path) -> None:
    """the manifest's widget builds in a viewer, loads the demo model and segments and commits one box"""
    import napari
    import numpy as np
    from npe2 import PluginManifest
    from npe2.manifest.utils import import_python_name
    from qtpy.QtWidgets import QApplication
    from skimage.measure import label, regionprops

    manifest = PluginManifest.from_distribution("napari-ovsam")
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    viewer = napari.Viewer(show=False)
    try:
        data, attributes, _ = import_python_name(commands["napari-ovsam.sample_2d"])()[0]
        image = viewer.add_image(data, **attributes)
        widget = import_python_name(commands["napari-ovsam.make_widget"])(viewer)
        viewer.window.add_dock_widget(widget, name="OV-SAM Annotator")
        assert widget.load_model("demo", "cpu") is not None, "load_model refused"
        _wait(QApplication, lambda: not widget.busy)
        widget.set_vocabulary(VOCABULARY)
        _wait(QApplication, lambda: not widget.busy)
        region = max(
            regionprops(label(np.asarray(image.data) > np.percentile(image.data, 96))), key=lambda r: r.area
        )
        r0, c0, r1, c1 = region.bbox
        boxes = viewer.layers["ovsam boxes"]
        boxes.add_rectangles(np.array([[r0 - 3, c0 - 3], [r1 + 3, c1 + 3]], float))
        results = widget.segment()
        if results is None:  # the embedding was still being computed; the segmentation follows it
            _wait(QApplication, lambda: not widget.busy)
        group = widget.commit()
        assert group is not None and len(group.label_ids) == 1, "nothing committed"
        labels = viewer.layers["ovsam labels"]
        mask = np.asarray(labels.data) == group.label_ids[0]
        inside_box = mask[r0 - 3 : r1 + 3, c0 - 3 : c1 + 3].sum() / max(mask.sum(), 1)
        assert mask.sum() > 0.5 * region.area and inside_box > 0.99, (mask.sum(), region.area, inside_box)
        names = set(labels.features["class_name"])
        assert names <= set(VOCABULARY.split()) | {"unknown"}, names
        widget.close()
    finally:
        viewer.close()


def _wait(application, done, timeout: float = 300.0) -> None:
    """Process Qt events until ``done()`` (the widget's jobs report back through the event loop)."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("the widget did not finish in time")
        application.processEvents()
        time.sleep(0.02)


CHECKS = (
    check_isolation,
    check_dependencies,
    check_demo,
    check_download_list,
    check_npe2_validate,
    check_manifest_commands,
)


def inside(source_root: Path) -> int:
    checks = [*CHECKS, check_widget, check_isolation]  # isolation again: nothing came from the tree meanwhile
    for check in checks:
        start = time.perf_counter()
        check(source_root)
        print(f"smoke: ok  {check.__doc__} ({time.perf_counter() - start:.1f} s)", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/smoke_wheel.py", description=__doc__.split("\n")[0])
    p.add_argument("--inside", metavar="SOURCE_ROOT", help="(internal) run the checks in this environment")
    p.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it (debugging)")
    args = p.parse_args(argv)
    if args.inside:
        return inside(Path(args.inside))
    return outside(args.keep)


if __name__ == "__main__":
    sys.exit(main())
