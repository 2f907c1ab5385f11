"""The OpenAPI 3.0 document, generated from the model signature so it names the real columns."""

from __future__ import annotations

from typing import Any

from serving.schema import Column, Validator

_JSON_SCHEMA = {
    "double": {"type": "number"},
    "float": {"type": "number"},
    "long": {"type": "integer", "format": "int64"},
    "integer": {"type": "integer", "format": "int32"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "binary": {"type": "string"},
    "datetime": {"type": "string", "format": "date-time"},
}
_PREDICT_METHODS = ["predict", "predict_proba"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (not JSON, wrong shape, empty input)",
        413: "Body too large or too many rows",
        415: "Content-Type is not application/json",
        422: "Input does not match the model signature (columns, types, non-finite numbers), or the model's "
        "output for it is not finite (non_finite_output)",
        503: "Not ready",
    }
    return {
        str(s): {"description": text[s], "content": {"application/json": {"schema": _ref("Error")}}} for s in statuses
    }


def _cell(column: Column) -> dict[str, Any]:
    """One value of `column`: its JSON type, and null allowed when the signature marks it optional."""
    schema = dict(_JSON_SCHEMA.get(column.type, {"type": "string"}))
    if not column.required:
        schema["nullable"] = True
    return schema


def build_openapi(validator: Validator, title: str, version: str, probabilities: bool = False) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document for this server and this model.

    `probabilities`: the model gives class probabilities, so /predict documents `return_probabilities`
    and /invocations `params.predict_method: predict_proba`.
    """
    specs = validator.specs
    row = {
        "type": "object",
        "properties": {c.name: _cell(c) for c in specs},
        "required": [c.name for c in specs if c.required],
        "additionalProperties": False,
    }
    columns = {
        "type": "object",
        "properties": {c.name: {"type": "array", "items": _cell(c), "minItems": 1} for c in specs},
        "required": [c.name for c in specs if c.required],
        "additionalProperties": False,
    }
    rows = {"type": "array", "items": _ref("Row"), "minItems": 1, "maxItems": validator.max_rows}
    # Columns may come in any order (they are matched by name); each data row has one value per column.
    n = len(specs)
    # OpenAPI 3.0 has no per-position item schemas: with mixed column types a cell may be any of them
    # (the server still checks each column's type and answers 422 wrong_type).
    cell_types = []
    for c in specs:
        if _cell(c) not in cell_types:
            cell_types.append(_cell(c))
    cell = cell_types[0] if len(cell_types) == 1 else {"anyOf": cell_types}
    split = {
        "type": "object",
        "properties": {
            "columns": {
                "type": "array",
                "items": {"type": "string", "enum": [c.name for c in specs]},
                "uniqueItems": True,
                "minItems": n,
                "maxItems": n,
            },
            "data": {
                "type": "array",
                "items": {"type": "array", "items": cell, "minItems": n, "maxItems": n},
                "minItems": 1,
                "maxItems": validator.max_rows,
            },
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
        "additionalProperties": False,
    }
    predictions = {
        "type": "object",
        "properties": {"predictions": {"type": "array"}},
        "required": ["predictions"],
    }
    methods = _PREDICT_METHODS if probabilities else _PREDICT_METHODS[:1]
    params = {
        "type": "object",
        "description": "Inference params: predict_method predict_proba answers one list of class probabilities per row",
        "properties": {"predict_method": {"type": "string", "enum": methods}},
        "additionalProperties": False,
        "nullable": True,  # null or {}: no params, as MLflow's scoring server takes them
    }
    proba_switch = {
        "type": "boolean",
        "description": "Also return `probabilities` (one list per row) and `classes` (their labels)",
    }

    def one_key(key: str, schema: dict[str, Any], **optional: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {key: schema, **optional},
            "required": [key],
            "additionalProperties": False,
        }

    predict_options = {"return_probabilities": proba_switch} if probabilities else {}
    invocation_options = {"params": params}

    def plain(schema_name: str, description: str) -> dict[str, Any]:
        return {
            "200": {
                "description": description,
                "content": {"application/json": {"schema": _ref(schema_name)}},
            }
        }

    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version, "description": "Flightdeck model server"},
        "paths": {
            "/predict": {
                "post": {
                    "summary": "Score rows (records) or columns against the model signature",
                    "operationId": "predict",
                    "requestBody": _json_body(_ref("PredictRequest")),
                    "responses": {
                        **plain("PredictResponse", "Predictions, one per row"),
                        **_errors(400, 413, 415, 422),
                    },
                }
            },
            "/invocations": {
                "post": {
                    "summary": "MLflow scoring protocol (split, records, instances, inputs; CSV, Parquet)",
                    "description": (
                        "The canonical payloads are documented; like `mlflow models serve`, the server also "
                        "accepts text/csv and Parquet bodies, extra columns (ignored, named in the "
                        "X-Ignored-Columns response header), numeric strings and integral floats coerced "
                        "as MLflow coerces them, and any params (unused ones named in X-Ignored-Params)."
                    ),
                    "operationId": "invocations",
                    "requestBody": _json_body(_ref("InvocationsRequest")),
                    "responses": {
                        **plain("Predictions", "Predictions, one per row"),
                        **_errors(400, 413, 415, 422),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process is alive",
                    "operationId": "healthz",
                    "responses": plain("Status", "Alive"),
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Model loaded and a smoke prediction passes",
                    "operationId": "readyz",
                    "responses": {**plain("Status", "Ready"), **_errors(503)},
                }
            },
            "/version": {
                "get": {
                    "summary": "Model and image lineage",
                    "operationId": "version",
                    "responses": plain("Version", "Lineage"),
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "operationId": "metrics",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "Row": row,
                "PredictRequest": {
                    "oneOf": [
                        one_key("rows", rows, **predict_options),
                        one_key("columns", columns, **predict_options),
                    ]
                },
                "InvocationsRequest": {
                    "oneOf": [
                        one_key("dataframe_split", split, **invocation_options),
                        one_key("dataframe_records", rows, **invocation_options),
                        one_key("instances", {"oneOf": [rows, columns]}, **invocation_options),
                        one_key("inputs", {"oneOf": [rows, columns]}, **invocation_options),
                    ]
                },
                "Predictions": predictions,
                "PredictResponse": {
                    **predictions,
                    "properties": {
                        "predictions": {"type": "array"},
                        "probabilities": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
                        "classes": {"type": "array"},
                        "model_name": {"type": "string", "nullable": True},
                        "model_version": {"type": "string", "nullable": True},
                        "request_id": {"type": "string"},
                    },
                },
                "Status": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}},
                    "required": ["status"],
                },
                "Version": {"type": "object", "additionalProperties": True},
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                            "required": ["code", "message"],
                        },
                        "request_id": {"type": "string"},
                    },
                    "required": ["error"],
                },
            }
        },
    }
