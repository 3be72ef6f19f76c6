"""Slicer's ExtensionsIndex checks on the extension's catalog entry, offline.

``KneelSlicerExtension/index/KneelLandmarks.json`` is what gets submitted to Slicer/ExtensionsIndex. These
tests run the index's own check functions (``scripts/check_description_files.py``, vendored verbatim in
``tests/data/slicer_index/``, README there) on it and on this repository, as the index's CI does on a
pull request — with the network replaced by this checkout: the catalog-entry schema is the vendored
copy, the icon and screenshot URLs are answered with the repository's tracked files, and the clone is a
local clone. Each check is also shown to catch a bad entry.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
INDEX_DATA = Path(__file__).resolve().parent / "data" / "slicer_index"
ENTRY = REPO_ROOT / "KneelSlicerExtension" / "index" / "KneelLandmarks.json"
EXTENSION = "KneelLandmarks"
REPOSITORY = "https://github.com/kneel-monai/kneel-monai"
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-{}.json"

#: the one line of the index's script that only Python 3.12 compiles (print_categories, unused here)
PY312_LINE = ("""    print(f"[\\n{'\\n'.join(f'    "{category}",' for category in """
              """sorted(extensions_for_categories.keys()))}\\n]")""")
PY311_LINE = (
    """    print("[\\n" + "\\n".join(f'    "{category}",' for category in sorted(extensions_for_categories.keys()))"""
    """ + "\\n]")""")


def load_index_checks() -> types.ModuleType:
    """The vendored ``check_description_files.py`` as a module (its one 3.12-only line rewritten on 3.11)."""
    path = INDEX_DATA / "check_description_files.py"
    source = path.read_text(encoding="utf-8")
    if sys.version_info < (3, 12):
        assert source.count(PY312_LINE) == 1, "the index's script changed: update PY312_LINE"
        source = source.replace(PY312_LINE, PY311_LINE)
    module = types.ModuleType("slicer_index_checks")
    module.__file__ = str(path)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def tracked_files() -> set[str]:
    """What a clone of the repository holds: git's tracked files (the working tree without git)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.rglob("*") if p.is_file()}
    return {name for name in out.decode().split("\0") if name}


def content_type(data: bytes) -> str:
    """The content type a web server would give, from the file's first bytes."""
    for magic, kind in ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif")):
        if data.startswith(magic):
            return kind
    return "text/plain; charset=utf-8"


class OfflineResponse:
    def __init__(self, url: str, data: bytes):
        self.url, self.content = url, data
        self.headers = {"Content-Type": content_type(data)}

    def raise_for_status(self) -> None:
        pass

    def json(self):
        return json.loads(self.content)


class OfflineRequests:
    """Stands in for ``requests`` in the index's script: the web as it will be once this checkout is pushed.

    The catalog-entry schemas come from the vendored copies, ``<repository>/raw/main/<path>`` (and the
    raw.githubusercontent.com form) from the repository's tracked files; any other URL is a 404.
    """

    class RequestException(OSError):
        pass

    def __init__(self):
        self.pages = {SCHEMA_URL.format(v): INDEX_DATA / f"slicer-extension-catalog-entry-schema-{v}.json"
                      for v in ("v1.0.1", "v1.0.2")}
        for name in tracked_files():
            for prefix in (f"{REPOSITORY}/raw/main/", "https://raw.githubusercontent.com/kneel-monai/kneel-monai/main/"):
                self.pages[prefix + name] = REPO_ROOT / name
        self.requested: list[str] = []

    def get(self, url: str, timeout=None, headers=None) -> OfflineResponse:
        self.requested.append(url)
        path = self.pages.get(url)
        if path is None or not path.is_file():
            raise self.RequestException(f"404 Client Error: Not Found for url: {url}")
        return OfflineResponse(url, path.read_bytes())


@pytest.fixture()
def index(monkeypatch):
    """The index's checks, offline, with the repository-name exception our submission asks for."""
    checks = load_index_checks()
    monkeypatch.setattr(checks, "requests", OfflineRequests())
    monkeypatch.setattr(checks, "REPOSITORY_NAME_CHECK_EXCEPTIONS", [*checks.REPOSITORY_NAME_CHECK_EXCEPTIONS,
                                                                     "kneel-monai"])
    return checks


def entry() -> dict:
    return json.loads(ENTRY.read_text(encoding="utf-8"))


def run_checks(checks, name: str, metadata: dict, entry_file: Path, repository: Path) -> dict[str, str]:
    """The checks of the script's ``main()`` that can run offline, on an already present repository folder.

    Returns ``{check name: failure message}``; empty when every check passed.
    """
    runs = [
        (checks.check_json_schema, {}),
        (checks.check_json_file_format, {"extension_file_path": str(entry_file)}),
        (checks.check_extension_name, {}),
        (checks.check_category, {}),
        (checks.check_git_repository_name, {}),
        (checks.check_scm_url_syntax, {}),
        (checks.check_cmakelists_content, {"cloned_repository_folder": str(repository)}),
        (checks.check_license_file, {"cloned_repository_folder": str(repository)}),
    ]
    failures = {}
    for check, kwargs in runs:
        try:
            check(name, metadata, **kwargs)
        except checks.ExtensionCheckError as err:
            failures[check.__name__] = str(err)
    return failures


def copy_of_repository_top(tmp_path: Path, cmake_text: str | None = None) -> Path:
    """A folder with the repository's top-level CMakeLists.txt (or ``cmake_text``) and LICENSE."""
    folder = tmp_path / "repository"
    folder.mkdir()
    (folder / "CMakeLists.txt").write_text(cmake_text or (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    shutil.copy(REPO_ROOT / "LICENSE", folder / "LICENSE")
    return folder


def cmake_value(variable: str) -> str:
    match = re.search(rf'set\({variable} "([^"]*)"\)', (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    assert match, f"no set({variable} \"...\") in CMakeLists.txt"
    return match.group(1)


# --- the entry passes ---------------------------------------------------------------------------------------

def test_the_entry_passes_the_index_checks(index):
    assert run_checks(index, EXTENSION, entry(), ENTRY, REPO_ROOT) == {}
    requested = index.requests.requested
    assert SCHEMA_URL.format("v1.0.1") in requested  # the schema was really fetched (offline) and validated
    assert cmake_value("EXTENSION_ICONURL") in requested
    assert cmake_value("EXTENSION_SCREENSHOTURLS").split()[0] in requested


def test_the_entry_depends_only_on_extensions_in_the_index(index, tmp_path):
    folder = tmp_path / "index"
    folder.mkdir()
    shutil.copy(ENTRY, folder)
    shutil.copy(INDEX_DATA / "PyTorch.json", folder)  # the index's own entry of our one dependency
    index.check_dependencies(str(folder))

    (folder / "PyTorch.json").unlink()
    with pytest.raises(index.ExtensionDependencyError, match="'PyTorch' extension is not found"):
        index.check_dependencies(str(folder))


def test_the_clone_is_within_the_size_limit_and_has_a_licence(index, tmp_path):
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    metadata = {**entry(), "scm_url": str(REPO_ROOT), "scm_revision": "HEAD"}  # the index clones scm_url
    index.check_clone_repository(EXTENSION, metadata, str(clone))
    index.check_repository_size(EXTENSION, metadata, str(clone))
    index.check_license_file(EXTENSION, metadata, str(clone))


def test_the_entry_has_the_index_format_and_agrees_with_cmakelists():
    from jsonschema import Draft7Validator

    raw = ENTRY.read_bytes()
    data = entry()
    # as the index's files are written (prettier: 2 spaces, one array item a line, LF, final newline)
    real = (INDEX_DATA / "PyTorch.json").read_bytes()
    assert real == (json.dumps(json.loads(real), indent=2) + "\n").encode()
    assert raw == (json.dumps(data, indent=2) + "\n").encode()
    assert set(data) == set(json.loads(real))
    # the index's pre-commit hook validates every entry against its newest schema
    schema = json.loads((INDEX_DATA / "slicer-extension-catalog-entry-schema-v1.0.2.json").read_text())
    assert not list(Draft7Validator(schema).iter_errors(data))
    # the PR template: the entry is consistent with the top-level CMakeLists.txt
    assert ENTRY.stem == re.search(r"project\((\w+)\)", (REPO_ROOT / "CMakeLists.txt").read_text()).group(1)
    assert data["category"] == cmake_value("EXTENSION_CATEGORY")
    depends = cmake_value("EXTENSION_DEPENDS")
    assert data["build_dependencies"] == ([] if depends == "NA" else depends.split())
    assert data["scm_url"] == REPOSITORY


def test_the_extension_urls_are_literal_and_point_at_tracked_files():
    tracked = tracked_files()
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_value(variable).split():
            assert url.startswith(f"{REPOSITORY}/") and "$" not in url, (variable, url)
            path = re.fullmatch(rf"{re.escape(REPOSITORY)}/(?:raw|blob)/main/(.+)", url).group(1)
            assert path in tracked, f"{variable}: {path} is not in the repository"


# --- what it does not pass, and why ---------------------------------------------------------------------------

def test_the_repository_name_needs_the_index_exception(index):
    """The index wants repositories named Slicer...; kneel-monai needs its entry in the exception list."""
    index.REPOSITORY_NAME_CHECK_EXCEPTIONS.remove("kneel-monai")
    failures = run_checks(index, EXTENSION, entry(), ENTRY, REPO_ROOT)
    assert list(failures) == ["check_git_repository_name"]
    assert "The current repository name is 'kneel-monai'" in failures["check_git_repository_name"]
    index.check_git_repository_name(EXTENSION, {"scm_url": "https://github.com/kneel-monai/SlicerKneelLandmarks"})


# --- the checks catch a bad entry -----------------------------------------------------------------------------

def write_entry(tmp_path: Path, data: dict, name: str = EXTENSION, newline: str = "\n") -> Path:
    path = tmp_path / f"{name}.json"
    path.write_bytes((json.dumps(data, indent=2) + "\n").replace("\n", newline).encode())
    return path


@pytest.mark.parametrize("change, check, words", [
    ({"category": "Knee Imaging"}, "check_category", "Category **`Knee Imaging`** is unknown"),
    ({"homepage": REPOSITORY}, "check_json_schema", "Additional properties are not allowed"),
    ({"tier": 7}, "check_json_schema", "7 is greater than the maximum of 5"),
    ({"$schema": SCHEMA_URL.format("v9.9.9")}, "check_json_schema", "Failed to download schema"),
    ({"scm_url": "ssh://github.com/kneel-monai/kneel-monai"}, "check_scm_url_syntax", "scm_url scheme is 'ssh'"),
], ids=["category", "extra-key", "tier", "unknown-schema", "scm-url"])
def test_a_bad_entry_fails_its_check(index, tmp_path, change, check, words):
    data = {**entry(), **change}
    failures = run_checks(index, EXTENSION, data, write_entry(tmp_path, data), REPO_ROOT)
    assert words in failures.get(check, ""), failures


def test_crlf_line_endings_and_a_slicer_prefixed_name_fail(index, tmp_path):
    data = entry()
    failures = run_checks(index, EXTENSION, data, write_entry(tmp_path, data, newline="\r\n"), REPO_ROOT)
    assert "non-LF line endings" in failures["check_json_file_format"]
    failures = run_checks(index, "SlicerKneelLandmarks", data, write_entry(tmp_path, data, "SlicerKneelLandmarks"),
                          REPO_ROOT)
    assert "*should not* start with 'Slicer'" in failures["check_extension_name"]
    assert "does not match extension description file name" in failures["check_cmakelists_content"]


NON_LITERAL = (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8").replace(
    f'"{REPOSITORY}/', '"${KNEEL_REPOSITORY_URL}/')


@pytest.mark.parametrize("cmake, words", [
    (NON_LITERAL, "EXTENSION_ICONURL '${KNEEL_REPOSITORY_URL}/raw/main/"),
    (NON_LITERAL, "EXTENSION_SCREENSHOTURLS '${KNEEL_REPOSITORY_URL}/raw/main/"),
    (lambda text: text.replace("Icons/KneelLandmarks.png", "Icons/Missing.png"), "Icons/Missing.png': 404"),
    (lambda text: text.replace("docs/images/slicer_panel.png", "docs/slicer.md"), "does not point to a valid image"),
    (lambda text: re.sub(r"set\(EXTENSION_SCREENSHOTURLS [^)]*\)\n", "", text), "No EXTENSION_SCREENSHOTURLS"),
], ids=["icon-variable", "screenshot-variable", "icon-missing", "screenshot-not-an-image",
                        "no-screenshot"])
def test_bad_cmakelists_urls_fail(index, tmp_path, cmake, words):
    text = (REPO_ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    bad = cmake(text) if callable(cmake) else cmake
    assert bad != text
    failures = run_checks(index, EXTENSION, entry(), ENTRY, copy_of_repository_top(tmp_path, bad))
    assert list(failures) == ["check_cmakelists_content"]
    assert words in failures["check_cmakelists_content"]


def test_a_repository_without_a_licence_fails(index, tmp_path):
    folder = copy_of_repository_top(tmp_path)
    (folder / "LICENSE").unlink()
    failures = run_checks(index, EXTENSION, entry(), ENTRY, folder)
    assert failures == {"check_license_file": "No license file found in repository root."}
