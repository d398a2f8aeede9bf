from __future__ import annotations

from typing import Any

import pytest

from ferry.logic import diff


@pytest.mark.parametrize(
    ("desired", "actual", "want"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, []),
        ({"a": {"b": "x"}}, {"a": {"b": "y"}}, [".a.b"]),
        ({"l": [{"n": 1}]}, {"l": [{"n": 1, "extra": True}]}, []),
        ({"l": [1, 2]}, {"l": [1]}, [".l"]),
        ({"port": 8000}, {"port": "8000"}, []),
        ({"a": {"b": 1}}, {}, [".a"]),
        ({"args": [], "env": {}}, {}, []),
        ({"args": ["x"]}, {}, [".args"]),
    ],
    ids=[
        "subset",
        "changed",
        "list-defaults",
        "list-length",
        "normalised-scalar",
        "absent",
        "empty-is-absent",
        "non-empty-missing",
    ],
)
def test_missing(desired: Any, actual: Any, want: list[str]) -> None:
    assert diff.missing(desired, actual) == want
