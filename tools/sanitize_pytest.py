"""pytest on an ASan+UBSan build of payq._core (tools/sanitize python).

Usage: python tools/sanitize_pytest.py PACKAGE_ROOT [pytest arguments...]

Started with libasan (and libstdc++, so that ASan finds the C++ throw it
intercepts) in LD_PRELOAD, because the interpreter itself is not
instrumented. Imports payq from PACKAGE_ROOT, where the sanitized _core
sits beside the sources, instead of the editable install.
"""

import os
import sys

# The runtime is loaded in this process now. The PostgreSQL servers and
# tools the tests start must not inherit it: a preloaded ASan hangs initdb.
os.environ.pop("LD_PRELOAD", None)

# The editable install's finder would import payq from the main build.
sys.meta_path[:] = [finder for finder in sys.meta_path if "skbc" not in type(finder).__module__]
package_root = os.path.abspath(sys.argv[1])
sys.path.insert(0, package_root)

import payq._core  # noqa: E402

if not payq._core.__file__.startswith(package_root):
    sys.exit(f"payq._core came from {payq._core.__file__}, not from {package_root}")
print(f"payq._core: {payq._core.__file__}", file=sys.stderr)

import pytest  # noqa: E402

sys.exit(pytest.main(sys.argv[2:]))
