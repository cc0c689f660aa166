"""docs/configuration.md's reference tables, generated from the config model so they cannot drift:
``python -m mlflow_platform.docs --write`` rewrites the part between the markers (a test compares it)."""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from .config import PROJECT, StackConfig, section_models

BEGIN = "<!-- BEGIN GENERATED: python -m mlflow_platform.docs --write -->"
END = "<!-- END GENERATED -->"
REFERENCE = Path("docs") / "configuration.md"
DAY2 = Path("docs") / "deploying.md"


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _table(model: type[BaseModel]) -> str:
    rows = "".join(
        f"\n| `{to_camel(name)}` | {_default(field)} | {field.description or ''} |"
        for name, field in model.model_fields.items()
    )
    return "| key | default | meaning |\n|---|---|---|" + rows


def _entries(model: type[BaseModel]) -> list[tuple[str, type[BaseModel]]]:
    """Fields that are lists of nested entries (e.g. sso.teamGroups), documented in their own table."""
    found = []
    for name, field in model.model_fields.items():
        args = typing.get_args(field.annotation)
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            found.append((to_camel(name), args[0]))
    return found


def config_reference_markdown() -> str:
    parts = []
    lists = {
        to_camel(n) for n, f in StackConfig.model_fields.items() if getattr(f.annotation, "__origin__", None) is tuple
    }
    for section, model in section_models().items():
        heading = f"`{PROJECT}:{section}`" + (" (a list: one entry each)" if section in lists else "")
        parts.append(f"{heading}\n\n{_table(model)}")
        for key, entry in _entries(model):
            parts.append(f"`{section}.{key}` entries\n\n{_table(entry)}")
    return "\n\n".join(parts) + "\n"


def generated_part(text: str) -> str:
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(path: Path, content: str | None = None) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n\n{content or config_reference_markdown()}\n{END}{tail}")


if __name__ == "__main__":  # pragma: no cover
    if "--write" in sys.argv:
        from .day2 import catalogue_markdown

        write(REFERENCE)
        write(DAY2, catalogue_markdown(Path.cwd()))
        print(f"wrote {REFERENCE} and {DAY2}")
    else:
        print(config_reference_markdown(), end="")
