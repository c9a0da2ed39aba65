"""`aia-bot console --sandbox` in the container image, which ships without the sandbox package."""

from __future__ import annotations

import subprocess
import sys

# The image installs only bot/ and handlers/ (Dockerfile): make `import sandbox` fail the same
# way, in a real process, and run the CLI entry point.
WITHOUT_SANDBOX = (
    "import sys; sys.modules['sandbox'] = None; "
    "from handlers.cli import main; sys.exit(main(['console', '--sandbox']))"
)


def test_console_sandbox_says_the_sandbox_is_not_installed() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT_SANDBOX], capture_output=True, text=True,
                          timeout=60, input="/aia pods\n")
    assert done.returncode == 2
    assert "sandbox is not installed in this image" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
