"""openapi.json's request schemas are generated from the pydantic request models, so the two
cannot drift: the committed document equals what the models give, field by field, and the
patterns the document advertises are the ones the validators use."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quotapilot.daemon.http.api import OPENAPI_PATH
from quotapilot.daemon.http.api.models import (
    BYTE_STRING_PATTERN,
    DURATION_STRING_PATTERN,
    REQUEST_MODELS,
    PreflightRequest,
    openapi_schema,
)
from quotapilot.daemon.http.api.openapi import main, with_request_schemas

DOCUMENT = json.loads(OPENAPI_PATH.read_text())
SCHEMAS = DOCUMENT["components"]["schemas"]


class TestGenerated:
    @pytest.mark.parametrize("name", sorted(REQUEST_MODELS))
    def test_document_equals_the_model(self, name: str) -> None:
        assert SCHEMAS[name] == openapi_schema(REQUEST_MODELS[name])

    @pytest.mark.parametrize("name", sorted(REQUEST_MODELS))
    def test_field_by_field(self, name: str) -> None:
        model = REQUEST_MODELS[name]
        schema = SCHEMAS[name]
        assert set(model.model_fields) == set(schema["properties"])
        assert {f for f, info in model.model_fields.items() if info.is_required()} == set(schema.get("required", []))
        assert schema["additionalProperties"] is False and model.model_config.get("extra") == "forbid"

    def test_every_request_body_is_a_generated_schema(self) -> None:
        refs = {op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
                for path in DOCUMENT["paths"].values() for op in path.values()
                if isinstance(op, dict) and "requestBody" in op}
        assert refs == set(REQUEST_MODELS)

    def test_check_mode(self) -> None:
        assert main(["--check"]) == 0
        assert with_request_schemas(DOCUMENT) == DOCUMENT

    def test_a_changed_model_is_caught(self) -> None:
        """The check can fail: a document edited by hand no longer equals the model."""
        edited = json.loads(json.dumps(DOCUMENT))
        edited["components"]["schemas"]["PreflightRequest"]["properties"]["target"]["maxLength"] = 10
        assert with_request_schemas(edited) != edited


class TestPatternsAreTheValidators:
    """A string the document's pattern allows is accepted by the model, and one it refuses is refused."""

    @settings(max_examples=200, deadline=None)
    @given(st.from_regex(BYTE_STRING_PATTERN, fullmatch=True))
    def test_byte_strings(self, value: str) -> None:
        assert PreflightRequest.model_validate({"target": "t", "bytes": value}).bytes >= 0

    @settings(max_examples=200, deadline=None)
    @given(st.from_regex(DURATION_STRING_PATTERN, fullmatch=True))
    def test_duration_strings(self, value: str) -> None:
        try:
            PreflightRequest.model_validate({"target": "t", "bytes": 1, "needed_for": value})
        except ValidationError as exc:  # in the pattern but over 30 days: a range error, not a pattern error
            assert "less than or equal" in str(exc)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=12).filter(lambda s: not re.match(BYTE_STRING_PATTERN, s)))
    def test_other_strings_refused(self, value: str) -> None:
        with pytest.raises(ValidationError):
            PreflightRequest.model_validate({"target": "t", "bytes": value})
