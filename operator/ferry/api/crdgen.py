"""Generate the CustomResourceDefinitions in `crds/` from the pydantic API types.

pydantic emits JSON Schema with `$ref`s, `anyOf` unions with null, titles and
defaults; Kubernetes wants a *structural* OpenAPI v3 schema: every `$ref` inlined,
no `title`, every object typed, free-form maps marked. This module does that
translation and nothing else. `make crds` calls `python -m ferry.api.crdgen`;
a unit test compares its output with the committed files so they cannot drift.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ferry.api.v1alpha1 import types

ROOT_MODELS: tuple[type[BaseModel], ...] = (types.InferenceEndpoint, types.ProviderConfig)
_DROP_KEYS = {"title", "$defs", "discriminator", "additionalProperties"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline `$ref`s, collapse nullable unions and drop keys Kubernetes rejects."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        # Optional[X] is `anyOf: [X, {type: null}]`: an absent field, not a union.
        variants = [v for v in node["anyOf"] if v.get("type") != "null"]
        if len(variants) != 1:
            raise ValueError(f"unions other than Optional are not structural: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("default", ...) is None:
            rest.pop("default")
        merged = {**_resolve(variants[0], defs), **rest}
        return _resolve(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _resolve(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "const" in out:
        out["enum"] = [out.pop("const")]
        out.setdefault("type", "string")
    return out


def _object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Give nested-object fields built by a default factory their default object.

    So an omitted `spec.scaling` still has `minReplicas`, for CEL rules and the
    operator alike.
    """
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = props.get(alias)
        if prop is None:
            continue
        annotation = field.annotation
        inner = _model_of(annotation)
        if inner is not None:
            if field.default_factory is not None and prop.get("type") == "object":
                # The full default, not {}: the API server checks a default against
                # the CEL rules before filling in nested defaults. An object with
                # nothing to default gets no default at all, so an absent field
                # stays absent (per-backend rules tell a user's value from ours).
                default = inner().model_dump(by_alias=True, exclude_none=True)
                if default:
                    prop["default"] = default
            _object_defaults(inner, prop)
        elif prop.get("type") == "array" and isinstance(prop.get("items"), dict):
            item_model = _model_of(getattr(annotation, "__args__", (None,))[0])
            if item_model is not None:
                _object_defaults(item_model, prop["items"])


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    _object_defaults(model, schema)
    return schema


def crd(root: type[BaseModel]) -> dict[str, Any]:
    """The CustomResourceDefinition for one root kind (spec + status subresource)."""
    extra = root.model_config.get("json_schema_extra")
    assert isinstance(extra, dict)
    kind = str(extra["x-ferry-kind"])
    plural = str(extra["x-ferry-plural"])
    fields = root.model_fields
    spec_model = _model_of(fields["spec"].annotation)
    status_model = _model_of(fields["status"].annotation)
    assert spec_model is not None
    assert status_model is not None
    spec_schema = structural_schema(spec_model)
    spec_schema["description"] = _doc(spec_model)
    status_schema = structural_schema(status_model)
    status_schema["description"] = _doc(status_model)
    columns: list[dict[str, str]] = []
    for name, typ, path, desc in _seq(extra["x-ferry-printer-columns"]):
        column = {"name": name, "type": typ, "jsonPath": path}
        if desc:
            column["description"] = desc
        columns.append(column)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{types.GROUP}"},
        "spec": {
            "group": types.GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": list(_seq(extra["x-ferry-short-names"])),
                "categories": list(_seq(extra["x-ferry-categories"])),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": types.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "description": _doc(root),
                            "type": "object",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def _doc(model: type[BaseModel]) -> str:
    """A model's docstring as one paragraph."""
    return " ".join(inspect.cleandoc(model.__doc__ or "").split())


def _seq(value: object) -> list[Any]:
    assert isinstance(value, list | tuple)
    return list(value)


def render(root: type[BaseModel]) -> str:
    """The committed YAML text of `root`'s CRD, header included."""
    header = "# Generated by `make crds` from operator/ferry/api/v1alpha1/types.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(root), sort_keys=False, width=100)


def filename(root: type[BaseModel]) -> str:
    """The file name of `root`'s CRD under `crds/`."""
    doc = crd(root)
    return f"{doc['metadata']['name']}.yaml"


def main(argv: list[str] | None = None) -> int:
    """`make crds`: write every CRD into each directory given."""
    parser = argparse.ArgumentParser(description="Write Ferry's CRDs from the API types.")
    parser.add_argument("out_dirs", nargs="+", type=Path, help="directories to write into")
    args = parser.parse_args(argv)
    for out_dir in args.out_dirs:
        out_dir.mkdir(parents=True, exist_ok=True)
        for root in ROOT_MODELS:
            path = out_dir / filename(root)
            path.write_text(render(root))
            print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
