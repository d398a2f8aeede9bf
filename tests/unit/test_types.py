"""The pydantic models accept what the CRD accepts and speak camelCase."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ferry.api.v1alpha1 import types
from tests.unit.factories import endpoint


def test_defaults_match_the_crd() -> None:
    ep = endpoint()
    assert ep.spec.scaling.min_replicas == 1
    assert ep.spec.spot.policy == "on-demand"
    assert ep.spec.deletion_policy == "Delete"
    assert ep.spec.server.port == 8000


def test_status_serialises_in_camel_case_without_nulls() -> None:
    status = types.InferenceEndpointStatus(observed_generation=2, ready_replicas=1)
    assert status.model_dump(by_alias=True, exclude_none=True) == {
        "observedGeneration": 2,
        "conditions": [],
        "readyReplicas": 1,
    }


@pytest.mark.parametrize(
    "spec",
    [{"gpu": {"type": "B200"}}, {"scaling": {"minReplicas": -1}}, {"surprise": True}],
    ids=["unknown-gpu", "negative-min", "unknown-field"],
)
def test_bad_specs_are_rejected(spec: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        endpoint(**spec)


def test_credentials_never_print_their_values() -> None:
    from ferry.providers.base import Credentials

    creds = Credentials({"token": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(creds)
    assert "s3cr3t-value" not in str(creds)
    assert creds.get("token") == "s3cr3t-value"
