#!/usr/bin/env python3
"""Parses a Terraform tree with python-hcl2 and prints what the deployment tests check, as JSON.

    python inspect.py DIR

Output: {"files": [...], "errors": {file: message}, "variables": {name: {"description",
"type", "default", "has_default"}}, "outputs": {name: {"description"}}, "var_refs": [names used
as var.NAME in .tf files and templates], "resources": [[type, name], ...]}.

Run with the deploy venv (.venv-deploy/bin/python), which has hcl2; the tests call it as a
subprocess. tables.py loads it by path (as `tf_inspect`).

This file's name shadows the standard library's `inspect` for scripts in this directory, and
lark (under hcl2) imports that: so this directory is taken off sys.path before hcl2 loads.
"""
import json
import re
import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

import hcl2  # noqa: E402

VAR_REF = re.compile(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)")


def _unquote(v):
    # python-hcl2 may wrap an attribute's value in a one-item list, keep string literals'
    # quotes, and wrap expressions in ${...}.
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def _type(t):
    t = _unquote(t)
    if isinstance(t, str) and t.startswith("${") and t.endswith("}"):
        t = t[2:-1]
    return t


def inspect(directory):
    d = Path(directory)
    out = {"files": [], "errors": {}, "variables": {}, "outputs": {}, "var_refs": set(), "resources": []}
    for path in sorted(d.rglob("*.tf")):
        rel = str(path.relative_to(d))
        out["files"].append(rel)
        text = path.read_text()
        out["var_refs"].update(VAR_REF.findall(text))
        try:
            doc = hcl2.loads(text)
        except Exception as e:  # noqa: BLE001 - report every file's error
            out["errors"][rel] = f"{type(e).__name__}: {e}"
            continue
        for block in doc.get("variable", []):
            for name, body in block.items():
                name = _unquote(name)
                out["variables"][name] = {
                    "file": rel,
                    "description": _unquote(body.get("description")),
                    "type": _type(body.get("type")),
                    "default": _unquote(body.get("default")),
                    "has_default": "default" in body,
                }
        for block in doc.get("output", []):
            for name, body in block.items():
                out["outputs"][_unquote(name)] = {"file": rel, "description": _unquote(body.get("description"))}
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for rname in named:
                    out["resources"].append([_unquote(rtype), _unquote(rname)])
    for path in sorted(d.rglob("*.tftpl")):
        out["var_refs"].update(VAR_REF.findall(path.read_text()))
    out["var_refs"] = sorted(out["var_refs"])
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(inspect(sys.argv[1]), indent=2, default=str))
