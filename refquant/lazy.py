"""Module attributes resolved on first access (PEP 562): submodules and functions loaded lazily,
and old public names kept for one release with a DeprecationWarning. refquant's packages
(``refquant``, ``refquant.golden``) and adapters built on it (``refquant_torch``) use it so that
``import`` stays cheap."""

from __future__ import annotations

import importlib
import warnings

__all__ = ["module_attributes", "lazy_table"]


def lazy_table(package: str, attributes=None, modules=()) -> dict:
    """The ``lazy`` mapping of :func:`module_attributes` for ``package``: ``attributes`` maps a
    submodule (its name relative to ``package``) to the names it exports, ``modules`` lists the
    submodules exposed as themselves (under their last name).

    >>> lazy_table("pkg", {"ops": ("add", "sub")}, ["tools.io"])
    {'add': ('pkg.ops', 'add'), 'sub': ('pkg.ops', 'sub'), 'io': ('pkg.tools.io', None)}
    """
    table = {name: (f"{package}.{module}", name)
             for module, names in (attributes or {}).items() for name in names}
    table.update({module.rsplit(".", 1)[-1]: (f"{package}.{module}", None) for module in modules})
    return table


def module_attributes(namespace: dict, *, lazy=None, deprecated=None):
    """``(__getattr__, __dir__)`` for the module whose globals are ``namespace``.

    ``lazy`` maps a name to ``(module, attribute)`` (``None``: the module itself), imported on
    first access and then kept in ``namespace``. ``deprecated`` maps an old name to ``(new
    spelling, function returning the value)``; each access warns.

    >>> ns = {"__name__": "demo"}
    >>> getattr_, dir_ = module_attributes(ns, lazy={"sqrt": ("math", "sqrt")})
    >>> getattr_("sqrt")(4.0), "sqrt" in ns, dir_()[-1]
    (2.0, True, 'sqrt')
    """
    lazy, deprecated = dict(lazy or {}), dict(deprecated or {})
    module = namespace["__name__"]

    def __getattr__(name):
        if name in lazy:
            module_name, attr = lazy[name]
            value = importlib.import_module(module_name)
            value = value if attr is None else getattr(value, attr)
            namespace[name] = value
            return value
        if name in deprecated:
            new, value = deprecated[name]
            warnings.warn(f"{module}.{name} is deprecated; use {module}.{new}", DeprecationWarning,
                          stacklevel=2)
            return value()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(lazy))

    return __getattr__, __dir__
