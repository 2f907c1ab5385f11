"""The OpenAPI 3.0 document, generated from the model signature so it names the real columns."""

from __future__ import annotations

from typing import Any

from serving.schema import Validator

_JSON_SCHEMA = {
    "double": {"type": "number"},
    "float": {"type": "number"},
    "long": {"type": "integer", "format": "int64"},
    "integer": {"type": "integer", "format": "int32"},
    "boolean": {"type": "boolean"},
    "string": {"type": "string"},
    "binary": {"type": "string"},
    "datetime": {"type": "string"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (not JSON, wrong shape, empty input)",
        413: "Body too large or too many rows",
        415: "Content-Type is not application/json",
        422: "Input does not match the model signature (columns, types, non-finite numbers)",
        503: "Not ready",
    }
    return {
        str(s): {"description": text[s], "content": {"application/json": {"schema": _ref("Error")}}} for s in statuses
    }


def build_openapi(validator: Validator, title: str, version: str) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document for this server and this model."""
    specs = validator.specs
    row = {
        "type": "object",
        "properties": {c.name: _JSON_SCHEMA.get(c.type, {"type": "string"}) for c in specs},
        "required": [c.name for c in specs if c.required],
        "additionalProperties": False,
    }
    columns = {
        "type": "object",
        "properties": {
            c.name: {"type": "array", "items": _JSON_SCHEMA.get(c.type, {"type": "string"}), "minItems": 1}
            for c in specs
        },
        "required": [c.name for c in specs if c.required],
        "additionalProperties": False,
    }
    rows = {"type": "array", "items": _ref("Row"), "minItems": 1, "maxItems": validator.max_rows}
    # Columns may come in any order (they are matched by name); each data row has one value per column.
    n = len(specs)
    cell_types = [_JSON_SCHEMA.get(c.type, {"type": "string"}) for c in specs]
    cell = cell_types[0] if all(t == cell_types[0] for t in cell_types) else {"anyOf": cell_types}
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

    def one_key(key: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {key: schema},
            "required": [key],
            "additionalProperties": False,
        }

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
                    "summary": "MLflow scoring protocol (split, records, instances, inputs)",
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
                "PredictRequest": {"oneOf": [one_key("rows", rows), one_key("columns", columns)]},
                "InvocationsRequest": {
                    "oneOf": [
                        one_key("dataframe_split", split),
                        one_key("dataframe_records", rows),
                        one_key("instances", {"oneOf": [rows, columns]}),
                        one_key("inputs", {"oneOf": [rows, columns]}),
                    ]
                },
                "Predictions": predictions,
                "PredictResponse": {
                    **predictions,
                    "properties": {
                        "predictions": {"type": "array"},
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
