"""The committed CRDs are what the API types generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.api import crdgen

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("root", crdgen.ROOT_MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("folder", ["crds", "charts/ferry/crds"])
def test_committed_crd_is_fresh(root: Any, folder: str) -> None:
    path = ROOT / folder / crdgen.filename(root)
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == crdgen.render(root), f"{path} is stale: run `make crds`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out.extend(_walk(value, f"{path}.{key}"))
        if "items" in node:
            out.extend(_walk(node["items"], f"{path}[]"))
    return out


@pytest.mark.parametrize("root", crdgen.ROOT_MODELS, ids=lambda m: m.__name__)
def test_schema_is_structural(root: Any) -> None:
    schema = crdgen.crd(root)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
        assert "title" not in node, path
        assert "additionalProperties" not in node or "properties" not in node, path
        assert "type" in node, f"{path} has no type"


def test_spec_fields_are_documented() -> None:
    schema = crdgen.crd(crdgen.ROOT_MODELS[0])["spec"]["versions"][0]["schema"]
    spec = schema["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [
        p for p, n in _walk(spec) if p and not p.endswith("[]") and not n.get("description")
    ]
    assert undocumented == []


def test_nested_defaults_are_applied_by_the_api_server() -> None:
    spec = crdgen.structural_schema(crdgen.ROOT_MODELS[0].model_fields["spec"].annotation)  # type: ignore[arg-type]
    assert spec["properties"]["scaling"]["default"] == {
        "minReplicas": 1,
        "maxReplicas": 1,
        "targetInflightRequests": 8,
    }
    assert spec["properties"]["scaling"]["properties"]["minReplicas"]["default"] == 1
    assert "default" not in spec["properties"]["model"]


def test_render_is_yaml_with_printer_columns() -> None:
    doc = yaml.safe_load(crdgen.render(crdgen.ROOT_MODELS[0]))
    columns = [c["name"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Provider", "GPU", "Ready", "Status", "URL", "Age"]
    assert doc["spec"]["names"]["shortNames"] == ["iep"]
