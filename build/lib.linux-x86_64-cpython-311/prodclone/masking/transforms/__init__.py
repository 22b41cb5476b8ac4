"""Transforms, registered by name. Adding one means adding one module here
that defines a ``Transform`` subclass with ``@register``; it is found on import."""

import importlib
import pkgutil

from prodclone.masking.transforms.base import REGISTRY, Context, Transform, register, trait

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["REGISTRY", "Context", "Transform", "register", "trait"]
