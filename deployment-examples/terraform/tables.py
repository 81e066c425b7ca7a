#!/usr/bin/env python3
"""terraform-docs style Markdown tables of a Terraform tree's variables and outputs.

    python tables.py DIR           print the tables
    python tables.py --check DIR   exit 1 (with a diff) if DIR/README.md's tables differ
    python tables.py --write DIR   replace the tables in DIR/README.md

The tables sit in the README between `<!-- BEGIN_TF_DOCS -->` and `<!-- END_TF_DOCS -->`.
Variables are listed required first, then by name; outputs by name. Needs python-hcl2: run it
with .venv-deploy/bin/python.
"""
import difflib
import importlib.util
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- BEGIN_TF_DOCS -->", "<!-- END_TF_DOCS -->"
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]  # see inspect.py
_spec = importlib.util.spec_from_file_location("tf_inspect", _here / "inspect.py")
tf_inspect = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tf_inspect)


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(value):
    text = json.dumps(value) if not isinstance(value, str) else json.dumps(value)
    return "`" + cell(text) + "`"


def tables(directory):
    info = tf_inspect.inspect(directory)
    lines = ["## Inputs", "", "| Name | Description | Type | Default | Required |", "|---|---|---|---|:---:|"]
    variables = sorted(info["variables"].items(), key=lambda kv: (kv[1]["has_default"], kv[0]))
    for name, v in variables:
        default = code(v["default"]) if v["has_default"] else "n/a"
        lines.append(f"| `{name}` | {cell(v['description'] or '')} | `{cell(v['type'] or 'any')}` | {default} | "
                     f"{'no' if v['has_default'] else 'yes'} |")
    lines += ["", "## Outputs", "", "| Name | Description |", "|---|---|"]
    for name, o in sorted(info["outputs"].items()):
        lines.append(f"| `{name}` | {cell(o['description'] or '')} |")
    return "\n".join(lines) + "\n"


def split_readme(text):
    if BEGIN not in text or END not in text:
        raise SystemExit(f"tables.py: README.md has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    return head, body, tail


def main(argv):
    mode = "print"
    if argv and argv[0] in ("--check", "--write"):
        mode = argv.pop(0)[2:]
    if len(argv) != 1:
        sys.exit(__doc__)
    directory = Path(argv[0])
    generated = tables(directory)
    if mode == "print":
        sys.stdout.write(generated)
        return 0
    readme = directory / "README.md"
    head, body, tail = split_readme(readme.read_text())
    if mode == "write":
        readme.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}")
        print(f"tables.py: wrote the tables of {readme}")
        return 0
    if body.strip("\n") == generated.strip("\n"):
        print(f"tables.py: {readme} tables are up to date")
        return 0
    sys.stdout.writelines(difflib.unified_diff(body.strip("\n").splitlines(True), generated.strip("\n").splitlines(True),
                                               "README.md", "generated"))
    print(f"\ntables.py: {readme} tables differ; run: python tables.py --write {directory}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
