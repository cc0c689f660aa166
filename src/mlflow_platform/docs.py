"""The README's configuration reference, generated from the config model so it cannot drift."""

from __future__ import annotations

from pydantic.alias_generators import to_camel

from .config import PROJECT, StackConfig, section_models


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(value) + "]"
    return str(value)


def config_reference_markdown() -> str:
    parts = []
    lists = {
        to_camel(n) for n, f in StackConfig.model_fields.items() if getattr(f.annotation, "__origin__", None) is tuple
    }
    for section, model in section_models().items():
        heading = f"`{PROJECT}:{section}`" + (" (a list: one entry each)" if section in lists else "")
        parts.append(f"{heading}\n\n| key | default | meaning |\n|---|---|---|")
        for name, field in model.model_fields.items():
            parts[-1] += f"\n| `{to_camel(name)}` | {_default(field)} | {field.description or ''} |"
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(config_reference_markdown(), end="")
