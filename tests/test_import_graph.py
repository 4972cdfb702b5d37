"""The package has no import circles, lazy imports counted (a circle broken only by a lazy
import still couples the modules in it)."""

from __future__ import annotations

from tests.import_graph import direct_imports, import_cycles


def test_no_module_imports_itself_around_a_circle():
    assert import_cycles() == []


def test_the_cycle_check_sees_lazy_imports():
    """The ``ingestion.source`` validator imports the dataset sources inside the function."""
    assert "lors_distill.core.ingest" in direct_imports("lors_distill.core.config")
    assert "lors_distill.settings" not in direct_imports("lors_distill.structure")
