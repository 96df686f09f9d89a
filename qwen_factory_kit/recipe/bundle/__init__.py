"""Shareable recipe bundles: ``qfk recipe pack`` / ``qfk recipe unpack``.

A bundle is a zip that lets someone else run the same recipe on the same data:

=========================  ==================================================================
``bundle.json``            format, kit and library versions, the recipe's name and sha256, the
                           KEY=VALUE overrides given to pack, for every dataset the recipe uses:
                           its registry entry (and the base entry of a ``NAME__nN`` or
                           ``NAME__tN`` mix entry), the summary of its qfk manifest (source ids
                           and revisions, conversion options, sha256 of the converted files), a
                           token mix's row count and sha256; every other member with its sha256
                           and size
``recipe.yaml``            the recipe text, byte for byte
``dataset_info.json``      the registry entries (a subset of the packer's ``dataset_info.json``)
``data/...``               the qfk manifests, and with ``--with-data`` the converted files, at
                           their paths relative to the recipe's ``dataset_dir``
``files/...``              files the recipe refers to (its DeepSpeed config)
=========================  ==================================================================

The zip is deterministic (members sorted, fixed timestamps and modes): the same inputs give the
same bytes. :func:`unpack` treats a bundle as untrusted input: it checks every member name, mode
and size before it writes anything, reads YAML with ``yaml.safe_load`` only, and refuses recipe
values and registry entries that point outside the destination unless told otherwise. Datasets
are re-converted from their recorded sources (or taken from the bundle), a token mix's rows are
picked again from its base, every file is checked against its recorded sha256, and only then is
anything registered.

Modules, in the order they depend on each other:

- :mod:`.format`: member names, the format version, the deterministic zip writer;
- :mod:`.untrusted`: every check of a bundle as untrusted input (readable on its own);
- :mod:`.pack`: :func:`pack`;
- :mod:`.plan`: unpack's first phase, the checks that make one :class:`~.plan.UnpackPlan`;
- :mod:`.reconvert`: re-making a dataset from its recorded source;
- :mod:`.unpack`: :func:`unpack`, the phases after the plan (fetch, verify, move, register).
"""

from .format import FORMAT
from .pack import pack
from .reconvert import conversion_options
from .unpack import unpack
from .untrusted import (
    DEFAULT_MAX_MEMBER_BYTES,
    DEFAULT_MAX_TOTAL_BYTES,
    safe_recipe_args,
)

__all__ = ["DEFAULT_MAX_MEMBER_BYTES", "DEFAULT_MAX_TOTAL_BYTES", "FORMAT", "conversion_options", "pack",
           "safe_recipe_args", "unpack"]
