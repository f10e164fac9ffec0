"""The README's quickstart must work as written."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from payq.embedded import EmbeddedServer

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_quickstart_runs_on_the_embedded_default():
    block = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    base = tempfile.mkdtemp(prefix="payq-readme-", dir="/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, "home")
    env = dict(os.environ, PAYQ_HOME=home)
    env.pop("PAYQ_DSN", None)
    try:
        result = subprocess.run([sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "'-12.41 CNY', '12.34 CNY', '0.07 CNY'" in result.stdout
    finally:
        EmbeddedServer(home).down()
        shutil.rmtree(base, ignore_errors=True)
