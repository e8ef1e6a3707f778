"""Every reference in the code's docstrings and in the docs leads somewhere.

* ``:mod:``, ``:func:``, ``:class:``, ``:meth:``, ``:data:``, ``:attr:`` and ``:exc:`` roles in the
  docstrings of ``fedmoe/``, ``strategies/``, ``clients/`` and ``sims/`` and in ``docs/*.md`` and
  ``README.md`` name an importable module or an object that exists. A target is tried as written
  (absolute), then in the enclosing class, then in the module of the docstring (so a bare
  ``:func:`name``` may mean a function of the same module); ``~`` and a trailing ``()`` are
  ignored, as Sphinx does.
* Relative markdown links (``[text](path#anchor)``) in ``docs/*.md`` and ``README.md`` point at
  files that exist, and an anchor at a heading of that file. Backticked repository paths
  (``sims/bench/pareto.py``, ``docs/models.md``) in the docs and the docstrings exist.
* Every citation key ``[P000]`` … used anywhere in the project has an entry in
  ``docs/references.md``; every function and test named in that page's equation table
  exists; docstrings, comments and docs cite papers by key, not by bare number.
* ``fedmoe/__init__.py`` describes every subpackage and module of ``fedmoe/``.
* Nothing cites the design notes that are not part of the repository.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import tokenize
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("fedmoe", "strategies", "clients", "sims")
REPO_DIRS = CODE_DIRS + ("tests", "docs")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml")
SKIP_PARTS = {".venv", ".git", "__pycache__", "runs", "build", "dist", ".pytest_cache"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".yaml", ".yml", ""}

ROLE = re.compile(r":(mod|func|class|meth|data|attr|exc|obj):`([^`]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
BACKTICKED = re.compile(r"``?([^`\s]+)``?")
KEY = re.compile(r"\[(P\d{3})\]")
ENTRY = re.compile(r"^#+\s*\[(P\d{3})\]", re.M)
# The design notes that were never part of the repository; spelled in two pieces so that
# this file does not mention them itself.
DANGLING = ("DESIGN" + ".md", "../" + "shared")


def project_files(suffixes: set[str] | None = None) -> list[Path]:
    files = [ROOT / name for name in TOP_FILES if (ROOT / name).is_file()]
    for top in REPO_DIRS:
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and not SKIP_PARTS.intersection(path.relative_to(ROOT).parts) \
                    and not any(part.endswith(".egg-info") for part in path.parts):
                files.append(path)
    if suffixes is not None:
        files = [f for f in files if f.suffix in suffixes]
    return files


def code_files() -> list[Path]:
    return [f for f in project_files({".py"}) if f.relative_to(ROOT).parts[0] in CODE_DIRS]


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---------------------------------------------------------------------------- docstrings


def docstrings(path: Path) -> list[tuple[str, str | None, int, str]]:
    """``(module, enclosing class or None, line, text)`` of every docstring of ``path``: those of
    the module, classes and functions, and the string statements that document an attribute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = module_name(path)
    found: list[tuple[str, str | None, int, str]] = []

    def visit(body: list[ast.stmt], cls: str | None) -> None:
        for node in body:
            if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                found.append((mod, cls, node.lineno, node.value.value))
            elif isinstance(node, ast.ClassDef):
                visit(node.body, node.name if cls is None else f"{cls}.{node.name}")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(node.body, cls)
            elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                visit(node.body, cls)

    visit(tree.body, None)
    return found


# ---------------------------------------------------------------------------- resolving names


@cache
def import_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            return None  # the module itself does not exist (not a failing import inside it)
        raise


def lookup(dotted: str, want_module: bool = False) -> bool:
    """Whether ``dotted`` names a module (``want_module``) or an object reachable from one."""
    parts = dotted.split(".")
    if not all(p.isidentifier() for p in parts):
        return False
    if want_module:
        return import_module(dotted) is not None
    for cut in range(len(parts), 0, -1):
        obj = import_module(".".join(parts[:cut]))
        if obj is None:
            continue
        for i, name in enumerate(parts[cut:]):
            nxt = getattr(obj, name, _MISSING)
            if nxt is _MISSING:
                return i == len(parts[cut:]) - 1 and inspect.isclass(obj) and has_instance_attribute(obj, name)
            obj = nxt
        return True
    return False


_MISSING = object()


def has_instance_attribute(cls: type, name: str) -> bool:
    """A field of a dataclass, NamedTuple or pydantic model, an annotation, or ``self.name = …`` in a method."""
    for klass in cls.__mro__:
        fields = set(getattr(klass, "__dataclass_fields__", {})) | set(getattr(klass, "model_fields", {})) \
            | set(vars(klass).get("__annotations__", {}))
        if name in fields:
            return True
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(name)}\s*(:[^=]+)?=(?!=)", source):
            return True
    return False


def resolves(role: str, target: str, module: str | None, cls: str | None) -> bool:
    if "<" in target and target.endswith(">"):
        target = target[target.index("<") + 1:-1]
    target = target.lstrip("~").removesuffix("()").lstrip(".")
    want_module = role == "mod"
    candidates = [target, f"builtins.{target}"]
    if module is not None and not want_module:
        if cls is not None:
            candidates.append(f"{module}.{cls}.{target}")
        candidates.append(f"{module}.{target}")
    return any(lookup(c, want_module) for c in candidates)


def test_roles_in_docstrings_resolve():
    bad = []
    for path in code_files():
        for module, cls, line, text in docstrings(path):
            for role, target in ROLE.findall(text):
                if not resolves(role, target, module, cls):
                    bad.append(f"{rel(path)}:{line}: :{role}:`{target}`")
    assert not bad, "references that resolve to nothing:\n" + "\n".join(bad)


def test_roles_in_docs_resolve():
    bad = []
    for path in doc_files():
        for role, target in ROLE.findall(path.read_text(encoding="utf-8")):
            if not resolves(role, target, None, None):
                bad.append(f"{rel(path)}: :{role}:`{target}`")
    assert not bad, "references that resolve to nothing:\n" + "\n".join(bad)


# ---------------------------------------------------------------------------- files and links


def is_repo_path(token: str) -> bool:
    """A token that names a file or folder of this repository (not a glob, URL or placeholder)."""
    if any(c in token for c in "*?<>{}[]$~…") or "://" in token:
        return False
    token = token.split("#")[0].split(":")[0].rstrip(".,;")
    first = token.split("/")[0]
    return token in TOP_FILES or (first in REPO_DIRS and "/" in token)


def repo_path(token: str) -> Path:
    return ROOT / token.split("#")[0].split(":")[0].rstrip(".,;")


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m) for m in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_markdown_links_resolve():
    bad = []
    for path in doc_files():
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                bad.append(f"{rel(path)}: ({target}): no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{rel(path)}: ({target}): no heading with that anchor")
    assert not bad, "links that lead nowhere:\n" + "\n".join(bad)


def test_backticked_paths_exist():
    bad = []
    for path in doc_files():
        for token in BACKTICKED.findall(path.read_text(encoding="utf-8")):
            if is_repo_path(token) and not repo_path(token).exists():
                bad.append(f"{rel(path)}: `{token}`")
    for path in code_files():
        for _, _, line, text in docstrings(path):
            for token in BACKTICKED.findall(text):
                if is_repo_path(token) and not repo_path(token).exists():
                    bad.append(f"{rel(path)}:{line}: ``{token}``")
    assert not bad, "paths that do not exist:\n" + "\n".join(bad)


# ---------------------------------------------------------------------------- citations


def references_page() -> str:
    return (ROOT / "docs" / "references.md").read_text(encoding="utf-8")


def test_every_citation_key_has_an_entry():
    defined = set(ENTRY.findall(references_page()))
    assert defined, "docs/references.md defines no [Pnnn] entry"
    bad = []
    for path in project_files(TEXT_SUFFIXES):
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            for key in KEY.findall(line):
                if key not in defined:
                    bad.append(f"{rel(path)}:{lineno}: [{key}]")
    assert not bad, "citation keys without an entry in docs/references.md:\n" + "\n".join(bad)


def table_rows() -> list[list[str]]:
    """The cells of the equation table's rows (a row starts with a citation key)."""
    rows = []
    for line in references_page().splitlines():
        if line.startswith("| [P"):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def test_equation_table_names_functions_and_tests_that_exist():
    rows = table_rows()
    assert len(rows) >= 10, "the equation table of docs/references.md is missing"
    defined = set(ENTRY.findall(references_page()))
    bad = []
    for key, what, computed, checked in rows:
        if KEY.match(key).group(1) not in defined:
            bad.append(f"{key}: no entry")
        names = re.findall(r"`([^`]+)`", computed)
        if not names:
            bad.append(f"{key} {what}: no function")
        for name in names:
            if not lookup(name):
                bad.append(f"{key} {what}: `{name}` does not exist")
        for test in re.findall(r"`([^`]+)`", checked):
            file, _, func = test.partition("::")
            path = ROOT / file
            if not path.is_file():
                bad.append(f"{key} {what}: {file} does not exist")
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            tests = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            if not func.startswith("test") or func not in tests:
                bad.append(f"{key} {what}: no test {func} in {file}")
    assert not bad, "rows of the equation table that lead nowhere:\n" + "\n".join(bad)


OLD_CITATION = re.compile(r"\b[Pp]apers?[ -]0\d\d\b")


def comments_and_docstrings(path: Path) -> list[tuple[int, str]]:
    found = [(line, text) for _, _, line, text in docstrings(path)]
    with path.open("rb") as f:
        found += [(tok.start[0], tok.string) for tok in tokenize.tokenize(f.readline) if tok.type == tokenize.COMMENT]
    return found


def test_citations_use_the_keys():
    """Docstrings, comments and docs cite a paper by its key (``[P001] eq. 9``), never by its bare number."""
    bad = []
    for path in project_files({".py"}):
        for line, text in comments_and_docstrings(path):
            bad += [f"{rel(path)}:{line}: {m.group(0)}" for m in OLD_CITATION.finditer(text)]
    for path in [*doc_files(), *project_files({".toml"})]:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            bad += [f"{rel(path)}:{lineno}: {m.group(0)}" for m in OLD_CITATION.finditer(line)]
    assert not bad, "citations without a [Pnnn] key (see docs/references.md):\n" + "\n".join(bad)


def test_nothing_cites_the_missing_design_notes():
    bad = []
    for path in project_files(TEXT_SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        for needle in DANGLING:
            if needle in text:
                bad.append(f"{rel(path)}: {needle}")
    assert not bad, "mentions of files outside the repository:\n" + "\n".join(bad)


def test_package_docstring_describes_every_subpackage_and_module():
    import fedmoe

    parts = sorted({p.parent.name for p in (ROOT / "fedmoe").glob("*/*.py")}
                   | {p.stem for p in (ROOT / "fedmoe").glob("*.py") if p.stem != "__init__"})
    missing = [name for name in parts if f":mod:`fedmoe.{name}`" not in (fedmoe.__doc__ or "")]
    assert not missing, f"fedmoe/__init__.py does not describe {missing}"


@pytest.mark.parametrize("role,target,module,cls,ok", [
    ("mod", "fedmoe.wireless.ofdma", None, None, True),
    ("mod", "fedmoe.split.protocol", None, None, False),
    ("func", "~fedmoe.wireless.ofdma.shannon_rate()", None, None, True),
    ("func", "fedmoe.wireless.ofdma.no_such_rate", None, None, False),
    ("func", "load_config", "fedmoe.config", None, True),
    ("class", "ConfigError", "fedmoe.config", None, True),
    ("func", "no_such_function", "fedmoe.config", None, False),
    ("meth", "fedmoe.registry.Registry.get", None, None, True),
    ("meth", "get", "fedmoe.registry", "Registry", True),
    ("attr", "fedmoe.models.experts.Expert.input_shapes", None, None, True),
    ("attr", "fedmoe.models.experts.Expert.no_such_attribute", None, None, False),
    ("class", "ValueError", "fedmoe.config", None, True),
])
def test_the_resolver_itself(role, target, module, cls, ok):
    """The checks above can fail: a missing module or name is reported, relative names resolve."""
    assert resolves(role, target, module, cls) is ok
