"""The house's shape: imports run down the layers, modules stay short, the docs map the tree and their links hold."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a module may import its own layer and those below it, never one above.
LAYERS = (("config", "frozen", "recording_state"), ("quorum",), ("conversations",), ("console",), ("app",))
PACKAGES = ("quorum", "conversations", "console")
# 400 lines as the code was wrapped by hand; ruff format's one-argument-a-line layout runs about a fifth longer.
MAX_LINES = 520
IGNORED = {"__pycache__", "recordings", "artifacts"}


def layer_of(module: str):
    """The layer index of a dotted module name of this project, or None for anything else."""
    top = module.split(".")[0]
    return next((n for n, names in enumerate(LAYERS) if top in names), None)


def application_modules():
    """The application's modules: the root's three and every module of the three packages."""
    return [
        ROOT / "app.py",
        ROOT / "config.py",
        ROOT / "frozen.py",
        ROOT / "recording_state.py",
        *sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")),
    ]


def imported(path: Path):
    """Every module name `path` imports, at any depth (lazy imports too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def module_name(path: Path) -> str:
    """`quorum/policy.py` -> `quorum.policy`."""
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.mark.parametrize("path", application_modules(), ids=module_name)
def test_imports_never_reach_a_higher_layer(path):
    own = layer_of(module_name(path))
    upward = [name for name in imported(path) if (layer_of(name) or 0) > own]
    assert upward == [], f"{module_name(path)} (layer {own}) imports {upward}: console -> conversations -> quorum"


@pytest.mark.parametrize("path", application_modules(), ids=module_name)
def test_no_module_is_over_the_line_limit(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def readme_map() -> dict:
    """The "Project layout" tables (docs/layout.md, linked from the README): path -> its line."""
    return dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", ROOT.joinpath("docs", "layout.md").read_text(), flags=re.M))


def docstring_line(path: Path) -> str:
    """A package's first docstring paragraph, or a module's first docstring line, as the README shows it."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(docstring.split("\n\n")[0].split()) if path.name == "__init__.py" else docstring.splitlines()[0]


def test_the_readme_map_names_every_entry_of_the_root_and_only_what_exists():
    ignored = {line.strip().rstrip("/") for line in ROOT.joinpath(".gitignore").read_text().splitlines()}
    entries = {
        entry.name + ("/" if entry.is_dir() else "")
        for entry in ROOT.iterdir()
        if not entry.name.startswith(".") and entry.name not in ignored | IGNORED
    }
    assert entries - set(readme_map()) == set()
    assert [name for name in readme_map() if not (ROOT / name).exists()] == []


def test_each_package_and_module_line_is_its_docstring():
    rows = readme_map()
    expected = {f"{package}/": docstring_line(ROOT / package / "__init__.py") for package in (*PACKAGES, "emulator")}
    expected |= {
        str(path.relative_to(ROOT)): docstring_line(path)
        for package in PACKAGES
        for path in sorted((ROOT / package).glob("*.py"))
        if path.name != "__init__.py"
    }
    wrong = {name: line for name, line in expected.items() if rows.get(name) != line}
    rows_to_write = "\n".join(f"| `{n}` | {line} |" for n, line in wrong.items())
    assert wrong == {}, "docs/layout.md rows to write:\n" + rows_to_write


DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(path: Path) -> str:
    """A Markdown file without its code: fenced blocks, indented blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    text = re.sub(r"^(?:    |\t).*$", "", text, flags=re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(path: Path) -> list:
    """The targets of a Markdown file's inline links, outside code."""
    return re.findall(r"\]\(([^)\s]+)\)", prose(path))


def anchors(path: Path) -> set:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated one numbered."""
    seen, found = {}, set()
    for heading in re.findall(
        r"^#{1,6} +(.+?) *#*$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S), flags=re.M
    ):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(document):
    broken = []
    for target in links(document):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:: not ours to check
        name, _, anchor = target.partition("#")
        linked = (document.parent / name).resolve() if name else document
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
            broken.append(target)
    assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(ROOT / "README.md")}
    assert [path.name for path in DOCUMENTS[1:] if path.resolve() not in linked] == []
