"""Build the API reference from the package's numpydoc docstrings with pdoc.

``make docs`` runs this. Every public module of ``symloss`` gets a page (the package's
``__all__`` would otherwise hide the submodules), rendered with pdoc's numpy docstring
format. The build fails on any warning raised while pdoc imports or renders the package
(a module that fails to import, an annotation that does not resolve, a bad entry in
``__all__``) and on any Sphinx-style cross-reference (``:func:`name```, ``:class:``,
``:meth:``, ...) that names nothing, which pdoc would render silently as plain code. As
``make test`` builds the reference too, CI catches a broken reference.

Run it::

    python docs/build_api.py [OUTPUT_DIR]      # default: build/api
"""

from __future__ import annotations

import builtins
import importlib
import pkgutil
import re
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pdoc
import pdoc.render

ROOT = Path(__file__).resolve().parents[1]
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj):`~?([^`<>]+?)`")
"""A Sphinx cross-reference role in a docstring; group 1 is the dotted name it names."""


def public_modules() -> list[str]:
    """Every importable module of ``symloss`` whose dotted name has no ``_`` part."""
    sys.path.insert(0, str(ROOT))
    import symloss

    names = ["symloss"] + [
        info.name for info in pkgutil.walk_packages(symloss.__path__, "symloss.")
    ]
    return [name for name in names if not any(p.startswith("_") for p in name.split("."))]


def _resolves(name: str, module: ModuleType) -> bool:
    """Whether ``name`` names something, read as Sphinx would from inside ``module``.

    Tried in turn: an absolute dotted path (``symloss.task.make_task``, ``torch.nn.Module``),
    a path from the module's own namespace or the builtins (``Expression.parse``, ``len``),
    and, for a bare name, an attribute of a class defined or imported in the module (a
    method cited from its class's docstring, as ``:meth:`save```).
    """
    parts = name.strip().removesuffix("()").split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        if _has_path(target, parts[split:]):
            return True
    for namespace in (module, builtins):
        if hasattr(namespace, parts[0]) and _has_path(getattr(namespace, parts[0]), parts[1:]):
            return True
    return len(parts) == 1 and any(
        isinstance(value, type) and hasattr(value, parts[0]) for value in vars(module).values()
    )


def _has_path(target: object, attributes: list[str]) -> bool:
    for attribute in attributes:
        if not hasattr(target, attribute):
            return False
        target = getattr(target, attribute)
    return True


def broken_references(module: ModuleType) -> list[str]:
    """The cross-reference roles in ``module``'s source whose target names nothing."""
    source = Path(module.__file__).read_text()
    return [
        f"{module.__name__}: {match.group(0)} names nothing"
        for match in ROLE.finditer(source)
        if not _resolves(match.group(1), module)
    ]


def build(output: Path) -> list[str]:
    """Render the reference into ``output``; the warnings raised, as text (none is success)."""
    pdoc.render.configure(docformat="numpy", search=True, show_source=False)
    modules = public_modules()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules, output_directory=output)
    problems = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
    for name in modules:
        problems += broken_references(importlib.import_module(name))
    return problems


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "api"
    problems = build(output)
    for problem in problems:
        print(f"docs: warning treated as an error: {problem}", file=sys.stderr)
    if problems:
        print(f"docs: {len(problems)} warning(s); fix the docstrings above", file=sys.stderr)
        return 1
    print(f"docs: API reference in {output / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
