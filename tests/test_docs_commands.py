"""Every command the documentation shows still fits the code: extracted from the ```bash blocks of the
README, docs/, the bundle's model card and the app's README, and checked without running the long jobs.

* ``kneel …``: parsed by the ``kneel`` command's own argument parser (a renamed option or subcommand fails);
* ``python -m monai.bundle run|ckpt_export …``: the config files exist and define the run id (or the
  exported network), and ``--stage`` names a stage the bundle knows;
* ``python <script>.py`` / ``python -m kneel_monai…``: the script exists and defines every ``--option`` used;
* ``python -m pytest <files>``: the files exist;
* ``pip install …[extras]``: the extras exist in pyproject.toml;
* ``monailabel start_server --app <folder>``: the folder is a MONAI Label app; ``ruff``: it is configured.

Shell plumbing (cd, mkdir, export, cmake) is not checked. The README's two commands run for real in
CI (``.ci/run`` is the test command; ``tests/test_install.py`` and the predict tests run the main job).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "kneel_landmarks"
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
        "bundles/kneel_landmarks/docs/README.md", "monailabel_app/README.md", "samples/README.md"]
PLUMBING = {"cd", "mkdir", "export", "cmake", "ls", "cp", "source"}


def commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, flags=re.S | re.M):
            block = re.sub(r"\\\n\s*", " ", block)
            for line in block.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#"):
                    found += [(doc, part.strip()) for part in line.split("&&") if part.strip()]
    return found


def _options(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def _config_keys(files: list[str]) -> dict:
    merged: dict = {}
    for name in files:
        path = next((root / name for root in (BUNDLE, REPO) if (root / name).is_file()), None)
        assert path is not None, f"config file {name} not found in the bundle or the repository"
        merged.update(json.loads(path.read_text(encoding="utf-8")))
    return merged


def check(tokens: list[str]) -> str:
    """Check one command (already split); returns what was checked, or raises AssertionError."""
    env = 0
    while env < len(tokens) and re.match(r"^[A-Z_]+=", tokens[env]):  # VAR=value prefixes
        env += 1
    tokens = tokens[env:]
    head = tokens[0]
    if head in PLUMBING:
        return "shell plumbing (not checked)"
    if head == "kneel":
        from kneel_monai.cli import build_parser

        try:
            build_parser().parse_args(tokens[1:])
        except SystemExit as exit_:
            raise AssertionError(f"`kneel` does not accept: {' '.join(tokens[1:])}") from exit_
        return "parsed by kneel's parser"
    if head == "pip":
        extras = set(re.findall(r"\[([a-z_,]+)\]", " ".join(tokens)))
        text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
        for group in extras:
            for extra in group.split(","):
                assert re.search(rf"^{extra} = \[", text, re.M), f"pip extra [{extra}] is not in pyproject.toml"
        return f"extras {sorted(extras)} exist"
    if head == "ruff":
        assert "[tool.ruff]" in (REPO / "pyproject.toml").read_text(encoding="utf-8"), "no ruff configuration"
        return "ruff is configured"
    if head == "monailabel":
        app = tokens[tokens.index("--app") + 1]
        assert (REPO / app / "main.py").is_file(), f"{app} is not a MONAI Label app folder"
        return "app folder exists"
    if head == "torchrun":
        tokens = ["python"] + tokens[next(i for i, t in enumerate(tokens) if t == "-m"):]
    if head in ("python", "torchrun"):
        rest = tokens[1:]
        if rest[:2] == ["-m", "pytest"]:
            for name in rest[2:]:
                if not name.startswith("-"):
                    assert list(REPO.glob(name)), f"no test file {name}"
            return "test files exist"
        if rest[:2] == ["-m", "monai.bundle"]:
            action = rest[2]
            args = rest[3:]
            if action == "verify_metadata":  # the zoo's schema check: the metadata file exists
                meta = args[args.index("--meta_file") + 1]
                assert (BUNDLE / meta).is_file() or (REPO / meta).is_file(), f"no metadata file {meta}"
                return f"{meta} exists"
            target = args[0] if args and not args[0].startswith("--") else ("run" if action == "run" else None)
            files = args[args.index("--config_file") + 1]
            files = json.loads(files.replace("'", '"')) if files.startswith("[") else [files]
            keys = _config_keys(files)
            assert target in keys, f"{target!r} is defined in none of {files}"
            if "--stage" in args:
                from kneel_monai.training.stages import STAGES

                stage = args[args.index("--stage") + 1]
                assert stage in STAGES, f"stage {stage!r} is not one of the bundle's {sorted(STAGES)}"
            return f"{files} define {target!r}"
        if rest[0] == "-m":
            script = REPO / (rest[1].replace(".", "/") + ".py")
            options = rest[2:]
        else:
            script = REPO / rest[0]
            options = rest[1:]
        assert script.is_file(), f"no script {script.relative_to(REPO)}"
        source = script.read_text(encoding="utf-8")
        for option in _options(options):
            assert f'"{option}"' in source, f"{script.relative_to(REPO)} defines no {option}"
        return "script and its options exist"
    pytest.fail(f"a documented command of an unknown kind: {' '.join(tokens)}")


@pytest.mark.parametrize("doc, command", commands())
def test_documented_command_fits_the_code(doc, command):
    check(shlex.split(command))


def test_the_docs_show_commands_and_the_checker_catches_a_stale_one():
    found = commands()
    assert len(found) > 25 and any(c.startswith("kneel predict") for _, c in found)
    with pytest.raises(AssertionError, match="does not accept"):
        check(shlex.split("kneel predict x.dcm --out o --no-such-option"))
    with pytest.raises(AssertionError, match="defined in none"):
        check(shlex.split("python -m monai.bundle run no_such_run --config_file configs/train.json --bundle_root ."))
    with pytest.raises(AssertionError, match="defines no --nope"):
        check(shlex.split("python benchmarks/bench_network.py --nope"))
