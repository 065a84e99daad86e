"""The one version number: pyproject.toml reads it from here (dynamic version), the root package re-exports it,
and the writer stamps it into every manifest."""

__version__ = "0.1.0"
