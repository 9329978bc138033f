"""The artifactstore command line (typer): one module per command group."""
