"""What the module needs in Slicer's Python, and where ``kneel_monai`` comes from.

* ``kneel_monai`` itself is not pip-installed into Slicer: the module runs it from a source folder
  — the repository holding this module (when Slicer loads the module from a checkout, added in
  Application Settings ▸ Modules) or the copy that the extension build installs next to the
  module (``KneelLandmarksPackage/``, with the shipped models). :func:`package_root` finds it.
* PyTorch comes from Slicer's PyTorch extension (``PyTorchUtils``), which picks the build for
  the machine's GPU; the other third-party packages are listed in ``Resources/requirements.txt``
  and installed with ``slicer.util.pip_install`` — only those that are missing, after the user
  agreed, and never when the module is imported. A package that Slicer already has in another
  version is reported, not replaced (replacing Slicer's own packages can break Slicer).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

__all__ = [
    "PACKAGE_FOLDER", "MissingDependencies", "add_package_root_to_path", "kneel_importable", "mismatched_requirements",
    "missing_dependencies", "missing_requirements", "package_root", "read_requirements", "require_dependencies",
    "requirement_name",
]

#: the folder the extension build installs kneel_monai (and the shipped models) into, beside the module
PACKAGE_FOLDER = "KneelLandmarksPackage"


def package_root(module_dir: str | os.PathLike) -> Path | None:
    """The folder holding ``kneel_monai/`` for a module in ``module_dir``, or None."""
    module_dir = Path(module_dir).resolve()
    for candidate in (module_dir / PACKAGE_FOLDER, module_dir.parent.parent):
        if (candidate / "kneel_monai" / "__init__.py").is_file():
            return candidate
    return None


def add_package_root_to_path(root: str | os.PathLike | None) -> None:
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))


def read_requirements(path: str | os.PathLike) -> list[str]:
    """The requirement lines of a requirements file (comments and blanks dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(1)


def _installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements whose distribution is not installed at all."""
    return [r for r in requirements if _installed_version(requirement_name(r)) is None]


def mismatched_requirements(requirements: list[str]) -> list[str]:
    """``"name version (wanted spec)"`` for installed distributions outside the wanted versions."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # no way to compare versions: say nothing rather than guess
        return []
    out = []
    for text in requirements:
        requirement = Requirement(text)
        version = _installed_version(requirement.name)
        if version is not None and requirement.specifier and not requirement.specifier.contains(version,
                                                                                                prereleases=True):
            out.append(f"{requirement.name} {version} (wanted {requirement.specifier})")
    return out


def kneel_importable() -> str | None:
    """None when ``kneel_monai``'s predictor imports, else the import error's message."""
    try:
        importlib.import_module("kneel_monai.inference")
        importlib.import_module("kneel_monai.cohort")
    except Exception as err:  # noqa: BLE001 — any import failure means "not ready"
        return f"{type(err).__name__}: {err}"
    return None


class MissingDependencies(RuntimeError):
    """The module's Python packages are not all installed: it cannot run, and its self-test cannot test."""


def missing_dependencies(requirements: list[str]) -> list[str]:
    """What the module cannot run without: PyTorch, missing requirements, or a ``kneel_monai`` failing to import."""
    missing = [] if importlib.util.find_spec("torch") else ["torch (PyTorch extension)"]
    missing += missing_requirements(requirements)
    if not missing:  # only then: importing kneel_monai pulls in torch and MONAI
        error = kneel_importable()
        if error is not None:
            missing.append(f"kneel_monai ({error})")
    return missing


def require_dependencies(requirements: list[str]) -> None:
    """Raise :class:`MissingDependencies` naming what is missing and how to install it.

    The self-test calls this first: a test that cannot run must fail, not report success.
    """
    missing = missing_dependencies(requirements)
    if not missing:
        return
    to_pip = missing_requirements(requirements)
    raise MissingDependencies(
        "Kneel Landmarks cannot run (nor be tested): Slicer's Python lacks " + ", ".join(missing) + ". "
        "To install them, open the Kneel Landmarks module and click Apply once: it lists what is missing and "
        "installs it (PyTorch through the PyTorch extension, the rest from Resources/requirements.txt)"
        + (f"; or install the PyTorch extension and run slicer.util.pip_install({' '.join(to_pip)!r}) "
           "in Slicer's Python console" if to_pip else "")
        + ". Then run the test again.")
