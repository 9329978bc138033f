"""``artifactstore.client``: the Python library for programs that publish or fetch artifacts."""
