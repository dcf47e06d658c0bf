"""The one version string of jdnas_sdk: pyproject.toml reads it, modules import it from here."""

__version__ = "0.1.0"
