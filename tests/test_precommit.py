"""`.pre-commit-config.yaml`: local hooks only, and everything they run exists, so the hooks
cannot rot unnoticed (pre-commit itself is not installed here; CI runs the same checks)."""
import shlex
import shutil

import yaml

from conftest import ROOT


def test_hooks_are_local_and_run_what_exists():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    assert [r["repo"] for r in config["repos"]] == ["local"]
    hooks = config["repos"][0]["hooks"]
    assert {h["id"] for h in hooks} >= {"shellcheck", "yamllint", "checkov", "deployment-tests"}
    for hook in hooks:
        assert hook["language"] == "system", hook["id"]
        words = shlex.split(hook["entry"])
        program = words[0]
        assert (ROOT / program).exists() or shutil.which(program), f"{hook['id']}: {program} not found"
        for word in words[1:]:
            if word.startswith(("tests/", "deployment-examples/")):
                assert (ROOT / word).exists(), f"{hook['id']}: {word} does not exist"
