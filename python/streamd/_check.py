"""`python -m streamd._check REQUEST`: run by `streamd run` and `streamd check` before
anything starts. Imports a Python stage's or source's class and checks its methods; with
"configure", makes a scratch instance and gives it the change (`streamd configure`).
Prints one line on failure, FILE:LINE:COL first for a syntax error, and exits 1."""

import json
import sys
import traceback

from ._load import load_class


def where(exc):
    tb = traceback.extract_tb(exc.__traceback__)
    return f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""


def main(request):
    code = request["code"]
    try:
        cls = load_class(code.get("file"), code.get("module"), code.get("class"))
    except SyntaxError as e:
        col = e.offset or 1
        return f"{e.filename}:{e.lineno}:{col}: SyntaxError: {e.msg}"
    except Exception as e:
        return f"{type(e).__name__}: {e}{where(e)}"
    needed = ["frames"] if request["kind"] == "source" else ["process"]
    missing = [m for m in needed if not callable(getattr(cls, m, None))]
    if missing:
        return f"class {cls.__name__} has no {missing[0]}() method"
    change = request.get("configure")
    if change is not None:
        if not callable(getattr(cls, "configure", None)):
            return f"class {cls.__name__} has no configure(args) method"
        try:
            cls(request.get("args") or {}).configure(change)
        except Exception as e:
            return f"{type(e).__name__}: {e}"
    return None


if __name__ == "__main__":
    problem = main(json.loads(sys.argv[1]))
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(1)
