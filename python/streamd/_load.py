"""Finding the class of a Python stage or source: from a file or an importable module."""

import importlib
import importlib.util
import os
import sys


def load_class(file, module, name):
    if file is not None:
        mod_name = "streamd_user_" + os.path.splitext(os.path.basename(file))[0]
        spec = importlib.util.spec_from_file_location(mod_name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"{file}: not a Python file")
        mod = importlib.util.module_from_spec(spec)
        # The file's own folder first, so that it can import its neighbours.
        sys.path.insert(0, os.path.dirname(os.path.abspath(file)))
        sys.modules[mod_name] = mod
        spec.loader.exec_module(mod)
        where = file
    else:
        mod = importlib.import_module(module)
        where = f"module {module}"
    try:
        cls = getattr(mod, name)
    except AttributeError:
        found = sorted(n for n, v in vars(mod).items() if isinstance(v, type) and v.__module__ == mod.__name__)
        raise AttributeError(f"{where} has no class {name} (it defines: {', '.join(found) or 'no classes'})") from None
    if not isinstance(cls, type):
        raise TypeError(f"{where}: {name} is not a class")
    return cls
