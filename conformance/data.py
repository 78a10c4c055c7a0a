"""Where the suite's data is: the packaged (or checkout) layer, and the user's layers over it.

The data is the capability fixtures (``capsdata/``), the domain templates and the case catalogue
(``templates/domains/*.xml.j2``, ``templates/cases.toml``) and the known bugs (``bugs.toml``).

The base layer is found once, in this order:

1. a source checkout this package runs from (``capsdata/`` and ``templates/cases.toml`` beside the
   ``conformance/`` folder): its files are read in place, so an edited fixture or case needs no reinstall;
2. the data an installed wheel carries (``conformance/_data/``, read through ``importlib.resources``).

With neither, every command stops with one line and exit code 2 (:class:`DataError`).

User layers (``--data DIR``, repeatable, and ``QEMU_CONFORMANCE_DATA``, a ``:``-separated list) lie over
the base layer: the setting's folders first, then the command line's, each over the ones before. A layer
folder holds any of::

    DIR/capsdata/qemu-VERSION-ARCH.xml     fixtures
    DIR/templates/cases.toml               catalogue entries ([cases.NAME], as in ours)
    DIR/templates/domains/NAME.xml.j2      templates (a template may include ours)
    DIR/bugs.toml                          known bugs ([bugs.ID], as in ours; fixed_in_packages)

On a name clash (a fixture file name, a case name, a template name, a bug id) the upper layer wins, and
the result or report names the layer a case, fixture or bug came from (:func:`layer_of`). The format is in
docs/data.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from conformance.errors import ConformanceError
from conformance.paths import absolute

PACKAGE_DIR = Path(__file__).resolve().parent
ENV = "QEMU_CONFORMANCE_DATA"
BASE_NAMES = ("checkout", "packaged")  # the base layer's name, by where it was found


class DataError(ConformanceError):
    """The suite's data (fixtures, templates, cases, known bugs) cannot be found."""


@dataclass(frozen=True)
class Layer:
    """One data folder: ``name`` is "checkout", "packaged" or the user folder as given."""

    name: str
    root: Path
    bugs: Path | None  # its known-bugs file (None: it has none)

    @property
    def capsdata(self) -> Path:
        return self.root / "capsdata"

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def domains(self) -> Path:
        return self.templates / "domains"

    @property
    def catalogue(self) -> Path:
        return self.templates / "cases.toml"

    @property
    def is_base(self) -> bool:
        return self.name in BASE_NAMES


def package_file(*parts: str) -> Path:
    """A file shipped inside the ``conformance`` package (bugs.toml, the report template, guest_init.sh, ...),
    through importlib.resources: beside the modules in a checkout and in an installed wheel alike."""
    found = resources.files("conformance").joinpath(*parts)
    return Path(str(found))


def _is_data_root(root: Path) -> bool:
    return (root / "capsdata").is_dir() and (root / "templates" / "cases.toml").is_file()


@lru_cache(maxsize=1)
def base_layer() -> Layer:
    """The checkout's data in place, else the wheel's; DataError when neither is there."""
    bugs = package_file("knownbugs", "bugs.toml")
    checkout = PACKAGE_DIR.parent
    if _is_data_root(checkout) and (checkout / "pyproject.toml").is_file():
        return Layer("checkout", checkout, bugs)
    packaged = package_file("_data")
    if _is_data_root(packaged):
        return Layer("packaged", packaged, bugs)
    raise DataError("no data found: neither a checkout's capsdata/ and templates/cases.toml nor the packaged "
                    "data (conformance/_data)", path=packaged,
                    hint="reinstall qemu-conformance from its wheel or sdist, or run it from a source checkout")


_given: list[Path] = []  # --data folders of this command line


def set_user_dirs(dirs: list[Path]) -> None:
    """The --data folders of the command line (in the order given); checked now, one line when unusable."""
    for folder in dirs:
        _user_layer(folder)
    _given[:] = [absolute(d) for d in dirs]


def user_dirs() -> tuple[Path, ...]:
    """QEMU_CONFORMANCE_DATA's folders, then the command line's (lowest first)."""
    value = os.environ.get(ENV, "")
    return tuple(absolute(p) for p in value.split(":") if p) + tuple(_given)


def _user_layer(folder: Path) -> Layer:
    folder = absolute(folder)
    if not folder.is_dir():
        raise DataError("data folder not found", path=folder, hint=f"give --data DIR (or {ENV}) an existing folder")
    bugs = folder / "bugs.toml"
    layer = Layer(str(folder), folder, bugs if bugs.is_file() else None)
    if not (layer.capsdata.is_dir() or layer.catalogue.is_file() or layer.domains.is_dir() or layer.bugs):
        raise DataError("data folder holds none of capsdata/, templates/cases.toml, templates/domains/, bugs.toml",
                        path=folder, hint="see docs/data.md for the layout")
    return layer


def layers() -> tuple[Layer, ...]:
    """Every layer, lowest first: the base, QEMU_CONFORMANCE_DATA's folders, the --data folders."""
    return _layers(user_dirs())


@lru_cache(maxsize=8)
def _layers(dirs: tuple[Path, ...]) -> tuple[Layer, ...]:
    return (base_layer(), *(_user_layer(d) for d in dict.fromkeys(dirs)))


def check() -> None:
    """DataError (one line, exit 2) when the data cannot be found or a user layer is unusable."""
    layers()


def layer_of(path: str | Path) -> str:
    """The name of the layer ``path`` lies in ("checkout", "packaged", a user folder; "" when none)."""
    p = Path(path)
    for layer in reversed(layers()):
        if layer.bugs is not None and p == layer.bugs:
            return layer.name
        if p.is_relative_to(layer.root):
            return layer.name
    return ""


def fixture_dirs() -> list[Path]:
    """The capsdata/ folders, lowest layer first."""
    return [layer.capsdata for layer in layers() if layer.capsdata.is_dir()]


def domain_dirs() -> list[Path]:
    """The templates/domains/ folders, highest layer first (jinja's search order: the upper one wins)."""
    return [layer.domains for layer in reversed(layers()) if layer.domains.is_dir()]


def catalogue_files() -> list[Path]:
    """The cases.toml files, lowest layer first."""
    return [layer.catalogue for layer in layers() if layer.catalogue.is_file()]


def bugs_files() -> list[Path]:
    """The known-bugs files, lowest layer first."""
    return [layer.bugs for layer in layers() if layer.bugs is not None]


def note_layer(details: dict[str, object], layer: str) -> None:
    """Name a user layer in a result's details (``layer``): the case came from there, not from ours."""
    if layer and layer not in BASE_NAMES:
        details.setdefault("layer", layer)
