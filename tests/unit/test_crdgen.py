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


@pytest.mark.parametrize("root", crdgen.ROOT_MODELS, ids=lambda m: m.__name__)
def test_spec_fields_are_documented(root: Any) -> None:
    schema = crdgen.crd(root)["spec"]["versions"][0]["schema"]
    spec = schema["openAPIV3Schema"]["properties"]["spec"]
    undocumented = [
        p for p, n in _walk(spec) if p and not p.endswith("[]") and not n.get("description")
    ]
    assert undocumented == []


def test_nested_defaults_are_applied_by_the_api_server() -> None:
    spec = crdgen.structural_schema(crdgen.ROOT_MODELS[0].model_fields["spec"].annotation)  # type: ignore[arg-type]
    assert spec["properties"]["scaling"]["default"] == {"minReplicas": 1, "maxReplicas": 1}
    assert spec["properties"]["scaling"]["properties"]["minReplicas"]["default"] == 1
    assert "default" not in spec["properties"]["model"]


#: The only defaults the CRDs may carry: generic ones every backend honours (D8).
GENERIC_DEFAULTS = {
    ".spec.gpu.count": 1,
    ".spec.scaling": {"minReplicas": 1, "maxReplicas": 1},
    ".spec.scaling.minReplicas": 1,
    ".spec.scaling.maxReplicas": 1,
    ".spec.deletionPolicy": "Delete",
}


@pytest.mark.parametrize("root", crdgen.ROOT_MODELS, ids=lambda m: m.__name__)
def test_backend_specific_fields_carry_no_default(root: Any) -> None:
    schema = crdgen.crd(root)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaults = {
        path: node["default"]
        for path, node in _walk(schema)
        if "default" in node and path.startswith(".spec")
    }
    expected = GENERIC_DEFAULTS if root.__name__ == "InferenceEndpoint" else {}
    assert defaults == expected


def test_status_fields_are_documented() -> None:
    for root in crdgen.ROOT_MODELS:
        schema = crdgen.crd(root)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        status = schema["properties"]["status"]
        undocumented = [
            p for p, n in _walk(status) if p and not p.endswith("[]") and not n.get("description")
        ]
        assert undocumented == [], root.__name__


def test_render_is_yaml_with_printer_columns() -> None:
    doc = yaml.safe_load(crdgen.render(crdgen.ROOT_MODELS[0]))
    columns = [c["name"] for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Provider", "GPU", "Ready", "Status", "Address", "Age"]
    address = doc["spec"]["versions"][0]["additionalPrinterColumns"][4]
    assert address["jsonPath"] == ".status.address"
    assert doc["spec"]["names"]["shortNames"] == ["iep"]
