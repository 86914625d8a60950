"""The docker command line, for tests/image (the engine is the one scripts/image-test.sh set up)."""

from __future__ import annotations

import subprocess


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `docker ARGS`; raises with its output when it fails (unless check=False)."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}")
    return result
