"""Make this checkout importable as ansible_collections.pandasai.pod_sandbox, as Ansible does,
and plugin_loader (this directory) importable by the tests.

scripts/bootstrap.sh links the checkout as .collections/ansible_collections/pandasai/pod_sandbox;
modules import their module_utils through that name.
"""

from __future__ import annotations

import sys
from pathlib import Path

COLLECTIONS = Path(__file__).resolve().parents[3] / ".collections"
if not (COLLECTIONS / "ansible_collections" / "pandasai" / "pod_sandbox").exists():
    raise RuntimeError(f"{COLLECTIONS} does not hold this checkout: run scripts/bootstrap.sh first")
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))
HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
