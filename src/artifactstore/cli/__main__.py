"""``python -m artifactstore.cli``: the same CLI as the ``artifactstore`` script."""

from artifactstore.cli.main import main

main()
