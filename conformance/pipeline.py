"""The one pipeline from a case to a QEMU command line: render -> validate -> parse -> semantics -> argv.

Three callers walk it: the static stages (conformance/static.py, which keeps the
fixture-independent first half per case and machine), the live stages
(conformance/live/boot.py, for the binary under test) and ``qemu-conformance
argv`` (conformance/argv/command.py, from a domain file). Each step is a
function here, so the three cannot drift apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conformance.caps.model import Capabilities
    from conformance.cases import Case
    from conformance.domain.model import Domain
    from conformance.domain.schema import SchemaStatus


def render_case(case: Case, caps: Capabilities, machine: str, *, defaults: dict[str, Any], image_dir: str,
                overrides: dict[str, Any] | None = None) -> str:
    """The case's domain XML for this arch and machine type (TemplateError on a broken template); a user's
    own domain (``case.domain``) adapted for the stage instead (conformance/domain/user.py)."""
    from conformance.cases import case_variables
    from conformance.domain.render import render_template

    variables = case_variables(case, caps, machine, image_dir=image_dir, defaults=defaults, overrides=overrides)
    if case.domain is not None:  # a user's own domain (run --domain): adapted, not rendered
        return case.domain.render(variables)
    return render_template(case.template, variables)


def parse_xml(xml: str | bytes, source: str, *, schema: bool = True) -> tuple[Domain, SchemaStatus | None]:
    """libvirt's RelaxNG schema (when asked), then the typed model (DomainInvalid on either)."""
    from conformance.domain.parse import parse_domain
    from conformance.domain.schema import validate_schema

    status = validate_schema(xml, source=source) if schema else None
    return parse_domain(xml, source=source), status


def domain_argv(domain: Domain, caps: Capabilities, *, checked: bool = False) -> list[str]:
    """The semantic rules for these capabilities, then the argv libvirt would build
    (DomainInvalid / UnsupportedByQemu when the domain cannot run on them).

    ``checked``: the domain already passed the rules without caps (``validate_domain(domain)``, as the
    static parse stage runs them), so only the rules that read caps run again."""
    from conformance.argv import build_argv
    from conformance.domain.semantics import validate_domain

    validate_domain(domain, caps, caps_only=checked)
    return build_argv(domain, caps)
