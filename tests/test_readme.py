"""The README's two commands stay the ones CI runs."""

import re

from conftest import ROOT


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    install_demo, install_tests = blocks[0].strip(), blocks[1].strip()
    assert install_demo.endswith("qfk demo") and "constraints.txt" in install_demo
    assert install_tests in (ROOT / ".ci" / "run").read_text()
    assert readme.index(install_demo) < readme.index("## ")
