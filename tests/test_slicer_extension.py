"""The Kneel Landmarks extension's files: CMake, the scripted-module shape, the dependency lists.

Static checks (no Slicer, no Qt): what a Slicer build would trip over — a module file missing from
CMake, a resource not there — and the rules the module must keep: nothing heavy imported when
Slicer loads it, and Slicer's own packages left alone.
"""

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "KneelSlicerExtension" / "KneelLandmarks"


def _load_dependencies_module():
    """``KneelLandmarksLib/dependencies.py`` alone (the package itself needs VTK, these checks do not)."""
    spec = importlib.util.spec_from_file_location("kneel_slicer_dependencies",
                                                  MODULE_DIR / "KneelLandmarksLib" / "dependencies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dependencies = _load_dependencies_module()


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.DOTALL)
    assert match, f"no set({variable} ...)"
    return [item.replace("${MODULE_NAME}", "KneelLandmarks") for item in match.group(1).split()]


def test_the_root_cmakelists_describes_the_extension():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert re.search(rf'set\({variable} "[^"]+"\)', text), variable
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "find_package(Slicer REQUIRED)" in text and "${Slicer_EXTENSION_CPACK}" in text
    (subdirectory,) = re.findall(r"add_subdirectory\(([^)]+)\)", text)
    assert (REPO_ROOT / subdirectory / "CMakeLists.txt").is_file()
    icon = re.search(r"raw/main/(\S+\.png)", text).group(1)
    assert (REPO_ROOT / icon).is_file()


def test_the_module_cmakelists_lists_every_file():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = set(_cmake_list(text, "MODULE_PYTHON_SCRIPTS"))
    on_disk = {"KneelLandmarks.py"} | {f"KneelLandmarksLib/{p.name}"
                                       for p in (MODULE_DIR / "KneelLandmarksLib").glob("*.py")}
    assert scripts == on_disk
    for resource in _cmake_list(text, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / resource).is_file(), resource
    assert re.search(r"slicerMacroBuildScriptedModule\(.*WITH_GENERIC_TESTS", text, re.DOTALL)
    assert "add_subdirectory(Testing)" in text
    patterns = re.findall(r'"\$\{KNEEL_SOURCE_DIR\}/([^"]*\*[^"]*)"', text)  # kneel_monai + models beside the module
    assert len(patterns) == 5, patterns
    for pattern in patterns:  # GLOB_RECURSE: folder/**/name
        folder, name = pattern.rsplit("/", 1)
        assert list((REPO_ROOT / folder).rglob(name)), pattern
    assert (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text().strip() == "add_subdirectory(Python)"
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text()
    (script,) = re.findall(r"slicer_add_python_unittest\(SCRIPT (\S+)\)", testing)
    assert (MODULE_DIR / "Testing" / "Python" / script.replace("${MODULE_NAME}", "KneelLandmarks")).is_file()


def test_the_module_has_the_template_shape_and_imports_nothing_heavy():
    tree = ast.parse((MODULE_DIR / "KneelLandmarks.py").read_text(encoding="utf-8"))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["KneelLandmarks"] == ["ScriptedLoadableModule"]
    assert bases["KneelLandmarksWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["KneelLandmarksLogic"][0] == "ScriptedLoadableModuleLogic"
    assert bases["KneelLandmarksTest"] == ["ScriptedLoadableModuleTest"]
    assert [ast.unparse(d) for d in classes["KneelLandmarksParameterNode"].decorator_list] == ["parameterNodeWrapper"]
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top_level.add((node.module or "").split(".")[0])
    assert not top_level & {"kneel_monai", "torch", "monai", "pydicom", "SimpleITK"}, top_level
    widget_methods = {n.name for n in classes["KneelLandmarksWidget"].body if isinstance(n, ast.FunctionDef)}
    assert {"setup", "onApplyButton", "_onPoll", "onSaveMarkups", "onExportCsv"} <= widget_methods


def test_requirements_are_kneel_monais_and_leave_slicers_packages_alone():
    requirements = dependencies.read_requirements(MODULE_DIR / "Resources" / "requirements.txt")
    names = {dependencies.requirement_name(r).lower() for r in requirements}
    assert not names & {"torch", "numpy", "simpleitk", "vtk"}  # PyTorch extension / Slicer's own copies
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    declared = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.DOTALL | re.MULTILINE).group(1)
    declared_names = {dependencies.requirement_name(d).lower() for d in re.findall(r'"([^"]+)"', declared)}
    assert names <= declared_names, names - declared_names
    assert names | {"torch", "numpy", "simpleitk"} == declared_names


def test_dependency_checks_see_what_is_installed():
    assert dependencies.missing_requirements(["pydicom>=2", "no-such-distribution-kneel-test>=1"]) == [
        "no-such-distribution-kneel-test>=1"]
    assert dependencies.mismatched_requirements(["pydicom<1"])[0].startswith("pydicom ")
    assert dependencies.package_root(MODULE_DIR) == REPO_ROOT
    assert dependencies.kneel_importable() is None
    with pytest.raises(ValueError):
        dependencies.requirement_name("  ")


def test_the_self_test_fails_saying_what_to_install_when_packages_are_missing():
    """A Python without the module's packages (isolated: no site-packages): the self-test's first check raises."""
    code = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('deps', sys.argv[1]); "
            "deps = importlib.util.module_from_spec(spec); spec.loader.exec_module(deps); "
            "deps.require_dependencies(deps.read_requirements(sys.argv[2]))")
    files = [str(MODULE_DIR / "KneelLandmarksLib" / "dependencies.py"),
             str(MODULE_DIR / "Resources" / "requirements.txt")]
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0, run.stdout
    message = run.stderr.strip().splitlines()[-1]
    assert message.startswith("deps.MissingDependencies: Kneel Landmarks cannot run (nor be tested)"), run.stderr
    for words in ("torch (PyTorch extension)", "monai>=", "pydicom>=", "click Apply once", "slicer.util.pip_install('"):
        assert words in message, words


def test_the_dependency_check_passes_only_when_everything_is_installed():
    requirements = dependencies.read_requirements(MODULE_DIR / "Resources" / "requirements.txt")
    assert dependencies.missing_dependencies(requirements) == []
    dependencies.require_dependencies(requirements)  # this environment has them all
    with pytest.raises(dependencies.MissingDependencies, match=r"lacks no-such-distribution-kneel-test>=1\."):
        dependencies.require_dependencies([*requirements, "no-such-distribution-kneel-test>=1"])


def test_the_self_test_fails_instead_of_skipping():
    """Every test method of KneelLandmarksTest gets its logic from ``_logic``, which raises when it cannot test."""
    source = (MODULE_DIR / "KneelLandmarks.py").read_text(encoding="utf-8")
    assert "Skipped" not in source
    tree = ast.parse(source)
    (test_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KneelLandmarksTest"]
    methods = {n.name: n for n in test_class.body if isinstance(n, ast.FunctionDef)}
    calls = {ast.unparse(n.func) for n in ast.walk(methods["_logic"]) if isinstance(n, ast.Call)}
    assert "dependencies.require_dependencies" in calls
    assert not [n for n in ast.walk(methods["_logic"]) if isinstance(n, ast.If)], "_logic must not branch around it"
    tests = [m for name, m in methods.items() if name.startswith("test_")]
    assert len(tests) == 2
    for method in tests:
        assert ast.unparse(method.body[0]) == "logic = self._logic()", method.name
        assert not [n for n in ast.walk(method) if isinstance(n, ast.Return)], f"{method.name} returns early"


def test_the_sample_radiograph_ships_with_the_module_and_is_registered_at_startup():
    """The build copies the sample beside the module; the module registers it when Slicer has started."""
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    patterns = re.findall(r'"\$\{KNEEL_SOURCE_DIR\}/([^"]*\*[^"]*)"', text)
    sample = REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm"
    assert any(sample in (REPO_ROOT / p.rsplit("/", 1)[0]).rglob(p.rsplit("/", 1)[1]) for p in patterns), patterns
    assert "Resources/Icons/KneelSyntheticBilateralKnee.png" in _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    tree = ast.parse((MODULE_DIR / "KneelLandmarks.py").read_text(encoding="utf-8"))
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    (module_class,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KneelLandmarks"]
    calls = {ast.unparse(n) for n in ast.walk(module_class) if isinstance(n, ast.Call)}
    assert "slicer.app.connect('startupCompleted()', registerSampleData)" in calls
    register_calls = {ast.unparse(n.func) for n in ast.walk(functions["registerSampleData"]) if isinstance(n, ast.Call)}
    assert "kneelsampledata.register_sample_data" in register_calls
