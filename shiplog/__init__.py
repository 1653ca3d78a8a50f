"""shiplog's composition root: settings, CLI, and the runner that starts everything."""

__version__ = "0.1.0"
