"""The public surface of ``crypto``: the doctest runs, and every public error and type is
exported exactly once."""

from __future__ import annotations

import doctest
import inspect

import crypto
from crypto import errors


def test_package_docstring_alice_and_bob_example_runs() -> None:
    result = doctest.testmod(crypto, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10
    assert result.failed == 0


def test_all_is_sorted_free_of_duplicates_and_importable() -> None:
    names = crypto.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert getattr(crypto, name) is not None


def test_every_error_class_is_exported() -> None:
    error_classes = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.VoxError)
    }
    assert error_classes <= set(crypto.__all__)
    assert set(errors.__all__) == error_classes


def test_every_error_class_appears_in_the_error_tree_docstring() -> None:
    tree = errors.__doc__ or ""
    for name in errors.__all__:
        assert name in tree, f"{name} is missing from the error tree in errors.py"


def test_core_public_types_are_exported_once() -> None:
    from crypto import envelope, keys, pqxdh
    from crypto.ratchet import session

    for module in (keys, envelope, pqxdh):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                assert name in crypto.__all__ or name in _INTERNAL, f"{module.__name__}.{name}"
    assert crypto.Session is session.Session


# Exported by their modules but deliberately not by the package (low-level or internal).
_INTERNAL = {"AccountPublicKey"}


def test_public_callables_have_docstrings() -> None:
    for name in crypto.__all__:
        obj = getattr(crypto, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"crypto.{name} has no docstring"
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_"):
                        assert member.__doc__, f"crypto.{name}.{attr} has no docstring"
