"""Stand-in for ansible-test's get-pip.py, which is downloaded from ci-files.testing.ansible.com.

That host is unreachable here (only package registries are), so pip comes from the interpreter's
own ensurepip and then installs the version ansible-test asked for from the configured index.
"""
import ensurepip
import os
import runpy
import sys

environ = dict(os.environ)
ensurepip.bootstrap(upgrade=True)
# ensurepip hides pip's configuration (PIP_CONFIG_FILE=/dev/null); the install below needs it.
os.environ.clear()
os.environ.update(environ)
# get-pip.py's own options (not pip's): --no-setuptools / --no-wheel mean "do not add them".
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.argv[:] = ["pip", "install", *args]
for name in list(sys.modules):
    if name == "pip" or name.startswith("pip."):
        del sys.modules[name]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
