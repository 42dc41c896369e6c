"""Property-based tests from the OpenAPI schema (schemathesis): no generated input, valid or not, gives a 5xx,
and every response matches the schema (status codes, content types, bodies).

Schemathesis' pytest plugin (``from_fixture``) does not work with pytest 9, so each operation's Hypothesis
strategy is driven with ``@given`` directly.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance  # noqa: E402

from polymodal.api import Model  # noqa: E402
from polymodal.serve import ServeSettings, create_app  # noqa: E402
from tests.api.table_predictor import fit_dir  # noqa: E402, F401
from tests.serve.fakes import FakeIndex  # noqa: E402

OPERATIONS = [
    "GET /health",
    "POST /embed",
    "POST /classify",
    "POST /caption",
    "POST /answer",
    "POST /generate",
    "POST /search",
    "POST /predict",
    "GET /items/{item_id}/image",
    "GET /items/{item_id}/audio",
    "GET /items/{item_id}/video",
]
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# GET /health takes no input at all, so there is nothing invalid to generate for it.
CASES = [
    pytest.param(label, mode, id=f"{label} {mode}")
    for label in OPERATIONS
    for mode in (POSITIVE, NEGATIVE)
    if not (label == "GET /health" and mode is NEGATIVE)
]


@pytest.fixture(scope="module")
def api_schema(model: Model, fake_index: FakeIndex):  # noqa: ANN201
    app = create_app(model, fake_index, ServeSettings(max_upload_bytes=256 * 1024))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.fixture(scope="module")
def generative_schemas(tiny_captioner_dir, tiny_vqa_dir, tiny_gan_dir, fit_dir) -> dict:  # noqa: ANN001, F811
    """Schemas of servers whose models caption / answer / generate (a GAN: one pass, whatever the steps) / predict
    (a fitted table predictor), so those endpoints run the model rather than a 400."""
    import polymodal

    return {
        label: schemathesis.openapi.from_asgi("/openapi.json", create_app(polymodal.load(path)))
        for label, path in [
            ("POST /caption", tiny_captioner_dir),
            ("POST /answer", tiny_vqa_dir),
            ("POST /generate", tiny_gan_dir),
            ("POST /predict", fit_dir),
        ]
    }


def _check(api_schema, label: str, mode, examples: int) -> None:  # noqa: ANN001
    operations = {op.label: op for op in (result.ok() for result in api_schema.get_all_operations())}
    assert set(operations) == set(OPERATIONS)  # a new endpoint must be added to the list above

    @given(case=operations[label].as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def run(case) -> None:  # noqa: ANN001
        # Schema-valid is not always acceptable here: a base64 string the schema allows is rarely an image, and
        # "texts or images" / "text or image" are rules JSON Schema cannot say; those are 4xx, checked elsewhere.
        excluded = [positive_data_acceptance]
        if _sends_valid_form(case):
            excluded.append(negative_data_rejection)
        case.call_and_validate(excluded_checks=excluded)

    run()


def _sends_valid_form(case) -> bool:  # noqa: ANN001
    """Whether a multipart case that the schema calls invalid reaches the server as a valid form, so accepting it is
    right (it still must not cause a 5xx): form fields are text, so a number or a list where the schema says string
    (``texts=4.29e+219``) is the text it prints as; and an extra field whose value is an empty list is no part at
    all."""
    if case.media_type != "multipart/form-data" or case.meta is None or not isinstance(case.body, dict):
        return False
    mutations = getattr(case.meta.phase.data, "mutations", ())
    (body,) = [b for b in case.operation.body if b.media_type == case.media_type]
    declared = body.resolved_schema.get("properties", {})

    def declared_type(pointer: str) -> object:
        node = body.resolved_schema
        for part in pointer.strip("/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node.get("type") if isinstance(node, dict) else None

    def sent_as_valid(m) -> bool:  # noqa: ANN001
        if m.keywords == ("type",):
            return m.new_value is not None and declared_type(m.schema_pointer) == "string"
        if m.keywords == ("additionalProperties",):
            return all(value == [] for key, value in case.body.items() if key not in declared)
        return False

    return bool(mutations) and all(sent_as_valid(m) for m in mutations)


@pytest.mark.parametrize("label,mode", CASES)
def test_generated_requests_never_cause_a_server_error(api_schema, label: str, mode) -> None:  # noqa: ANN001
    _check(api_schema, label, mode, examples=6)


@pytest.mark.parametrize("mode", [POSITIVE, NEGATIVE], ids=str)
@pytest.mark.parametrize("label", ["POST /caption", "POST /answer", "POST /generate", "POST /predict"])
def test_generative_endpoints_with_models_that_have_them(generative_schemas, label: str, mode) -> None:  # noqa: ANN001
    _check(generative_schemas[label], label, mode, examples=6)


@pytest.mark.slow
@pytest.mark.parametrize("label,mode", CASES)
def test_generated_requests_longer_run(api_schema, label: str, mode) -> None:  # noqa: ANN001
    _check(api_schema, label, mode, examples=100)
