"""The package's import graph, checked: no two modules reach each other, and the layers point one
way (the command line over the runbooks and the local platform, both over ``database``).

grimp reads every import statement, also those inside function bodies, so an import moved into a
function to dodge a circle is still a circle here.
"""

from __future__ import annotations

import grimp
import pytest

PACKAGE = "mlflow_platform"

#: importer -> the packages it must never import from, directly or through other modules.
LAYERS = {
    f"{PACKAGE}.database": (f"{PACKAGE}.local", f"{PACKAGE}.runbooks", f"{PACKAGE}.cli"),
    f"{PACKAGE}.runbooks": (f"{PACKAGE}.local",),
}


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(PACKAGE, cache_dir=None)


def circles(graph: grimp.ImportGraph) -> list[str]:
    """Every pair of modules where one imports the other and the other reaches back."""
    found = set()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                found.add(f"{module} -> {imported}, and back: {' -> '.join(back)}")
    return sorted(found)


def test_no_two_modules_import_each_other(graph: grimp.ImportGraph) -> None:
    assert circles(graph) == [], "import circles (move the shared piece where both can import it)"


@pytest.mark.parametrize("importer", sorted(LAYERS))
def test_the_layers_point_one_way(graph: grimp.ImportGraph, importer: str) -> None:
    crossings = [
        " -> ".join(chain)
        for forbidden in LAYERS[importer]
        for chain in sorted(graph.find_shortest_chains(importer=importer, imported=forbidden, as_packages=True))
    ]
    assert crossings == [], f"{importer} must not import {', '.join(LAYERS[importer])}"


def test_the_check_sees_a_circle_hidden_in_a_function_body(tmp_path, monkeypatch) -> None:
    """The check itself: a package whose two modules import each other, one of them only inside a
    function, fails it, naming both."""
    package = tmp_path / "circular_example"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def later():\n    from . import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = circles(grimp.build_graph("circular_example", cache_dir=None))
    assert found and all("circular_example.a" in line and "circular_example.b" in line for line in found)
