"""artifactstore: a content-addressed artifact registry."""

__version__ = "0.1.0"
