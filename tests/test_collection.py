"""The suite's own collection rule (tests/conftest.py): in the parallel run
two items with one node id would run once, so each schemathesis operation
gets its own id and any other duplicate stops the run."""

from __future__ import annotations

import pytest
from _pytest.nodeid import NodeId

from tests.conftest import pytest_collection_modifyitems


class Item:
    """What the hook reads and writes of a pytest item."""

    def __init__(self, nodeid: str, name: str):
        self._id = NodeId.parse(nodeid)
        self.name = name

    @property
    def nodeid(self) -> str:
        return str(self._id)


def test_each_operation_of_a_schemathesis_test_gets_its_own_node_id():
    items = [Item("tests/e2e/test_api_schema.py::test_api", f"test_api[{label}]") for label in ("GET /a", "POST /a", "GET /b/{code}")]
    pytest_collection_modifyitems(items)
    assert [item.nodeid for item in items] == [
        "tests/e2e/test_api_schema.py::test_api[GET /a]",
        "tests/e2e/test_api_schema.py::test_api[POST /a]",
        "tests/e2e/test_api_schema.py::test_api[GET /b/{code}]",
    ]


def test_a_parametrised_item_keeps_its_node_id():
    items = [Item("tests/x.py::test_y[1]", "test_y[1]"), Item("tests/x.py::test_y[2]", "test_y[2]")]
    pytest_collection_modifyitems(items)
    assert [item.nodeid for item in items] == ["tests/x.py::test_y[1]", "tests/x.py::test_y[2]"]


def test_two_items_with_one_node_id_stop_the_run():
    items = [Item("tests/x.py::test_y", "test_y"), Item("tests/x.py::test_z", "test_z"), Item("tests/x.py::test_y", "test_y")]
    with pytest.raises(pytest.UsageError, match=r"would run once in parallel: tests/x.py::test_y$"):
        pytest_collection_modifyitems(items)
