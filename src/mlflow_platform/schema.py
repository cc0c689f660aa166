"""A JSON schema for stack files, generated from the config model, so editors show each key's
description and flag typos as you type (``stacks/stack.schema.json``; ``make schema`` rewrites it).

Stack files reference it from their first line, the way the YAML language server reads it:
``# yaml-language-server: $schema=stack.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic.alias_generators import to_camel

from .config import PROJECT, SECRET_KEYS, StackConfig, section_models

SCHEMA_FILE = "stack.schema.json"


def stack_file_schema() -> dict:
    sections = section_models()
    properties: dict[str, dict] = {}
    definitions: dict[str, dict] = {}  # nested models (team groups), referenced as #/$defs/<name>
    for name, field in StackConfig.model_fields.items():
        key = to_camel(name)
        if key in sections:
            schema = sections[key].model_json_schema(by_alias=True)
            definitions.update(schema.pop("$defs", {}))
            if getattr(field.annotation, "__origin__", None) is tuple:  # a list of entries (teams)
                schema = {"type": "array", "description": field.description, "items": schema}
        elif key in SECRET_KEYS:
            schema = {
                "description": f"{field.description} Set with `pulumi config set --secret {PROJECT}:{key}`.",
                "type": "object",
                "properties": {"secure": {"type": "string"}},
                "required": ["secure"],
                "additionalProperties": False,
            }
        else:
            schema = {"type": "string", **_constraints(name)}
        properties[f"{PROJECT}:{key}"] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{PROJECT} stack file",
        "description": "Pulumi stack configuration for mlflow-platform (generated from mlflow_platform.config).",
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "properties": properties,
                # Other namespaces (aws:region, kubernetes:context, …) belong to their providers;
                # an unknown key in ours is a typo.
                "propertyNames": {"anyOf": [{"not": {"pattern": f"^{PROJECT}:"}}, {"enum": sorted(properties)}]},
                "required": [f"{PROJECT}:environment", f"{PROJECT}:artifacts"],
            }
        },
        **({"$defs": definitions} if definitions else {}),
    }


def _constraints(name: str) -> dict:
    field = StackConfig.model_fields[name]
    extra = {"description": field.description} if field.description else {}
    for item in field.metadata:
        if getattr(item, "pattern", None):
            extra["pattern"] = item.pattern
    return extra


def schema_text() -> str:
    return json.dumps(stack_file_schema(), indent=2) + "\n"


def write_schema(stacks_dir: Path) -> Path:
    path = stacks_dir / SCHEMA_FILE
    path.write_text(schema_text())
    return path


if __name__ == "__main__":  # pragma: no cover
    print(write_schema(Path("stacks")))
