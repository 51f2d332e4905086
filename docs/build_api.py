"""Build the API reference from the package's numpydoc docstrings with pdoc.

``make docs`` runs this. Every public module of ``symloss`` gets a page (the package's
``__all__`` would otherwise hide the submodules), rendered with pdoc's numpy docstring
format. Any warning raised while pdoc imports or renders the package (a module that fails
to import, an annotation that does not resolve, a bad entry in ``__all__``) fails the
build, so a broken reference is caught by ``make test`` as well.

Run it::

    python docs/build_api.py [OUTPUT_DIR]      # default: build/api
"""

from __future__ import annotations

import pkgutil
import sys
import warnings
from pathlib import Path

import pdoc
import pdoc.render

ROOT = Path(__file__).resolve().parents[1]


def public_modules() -> list[str]:
    """Every importable module of ``symloss`` whose dotted name has no ``_`` part."""
    sys.path.insert(0, str(ROOT))
    import symloss

    names = ["symloss"] + [
        info.name for info in pkgutil.walk_packages(symloss.__path__, "symloss.")
    ]
    return [name for name in names if not any(p.startswith("_") for p in name.split("."))]


def build(output: Path) -> list[str]:
    """Render the reference into ``output``; the warnings raised, as text (none is success)."""
    pdoc.render.configure(docformat="numpy", search=True, show_source=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*public_modules(), output_directory=output)
    return [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]


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
