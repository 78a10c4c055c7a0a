"""Render domain templates (jinja2 -> libvirt domain XML).

Templates render with StrictUndefined (an undefined variable is an error
naming the template and line) and XML autoescaping of every substituted
value, so a value such as ``a'/><x`` stays text and cannot change the
document's structure.
"""

from __future__ import annotations

import traceback
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from conformance.data import domain_dirs
from conformance.errors import TemplateError


@lru_cache(maxsize=8)
def environment(folder: str | tuple[str, ...]) -> jinja2.Environment:
    """Templates from ``folder``, or from several (the first that has a name wins: data layers, upper first)."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        undefined=jinja2.StrictUndefined,
        autoescape=True,  # escapes & < > " ' in every {{ value }}
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _template_line(exc: BaseException, template_path: Path) -> int | None:
    """The template line an exception was raised at (jinja maps its frames to template lines)."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename and Path(frame.filename).name == template_path.name:
            line = frame.lineno
    return line


def render_template(name: str, variables: dict[str, Any], folder: Path | None = None) -> str:
    """Render templates/NAME (``folder``, default: every data layer's templates/domains/, the upper layer's
    first) with ``variables``; TemplateError on any problem."""
    folders = [folder] if folder else domain_dirs()
    env = environment(tuple(str(f) for f in folders))
    try:
        template = env.get_template(name)
    except jinja2.TemplateNotFound:
        path = _path(name, folders)
        raise TemplateError("template not found", path=path,
                            hint=f"templates live in {path.parent}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}", path=exc.filename or _path(name, folders),
                            line=exc.lineno) from None
    try:
        return template.render(**variables)
    except jinja2.UndefinedError as exc:
        path = _path(name, folders)
        raise TemplateError(f"undefined variable: {exc.message}", path=path, line=_template_line(exc, path),
                            hint="define it in the case's vars in templates/cases.toml or pass --set NAME=VALUE"
                            ) from None
    except jinja2.TemplateError as exc:
        path = _path(name, folders)
        raise TemplateError(f"template error: {exc}", path=path, line=_template_line(exc, path)) from None


def _path(name: str, folders: list[Path]) -> Path:
    """The template file an error names: the first folder's that has it (else the first folder's)."""
    return next((f / name for f in folders if (f / name).exists()), folders[0] / name)
