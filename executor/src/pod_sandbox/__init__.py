"""pandasai-pod-sandbox: the executor that runs in each sandbox pod, its wire format and client."""

__version__ = "1.0.0"
