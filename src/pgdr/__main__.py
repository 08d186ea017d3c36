"""`python -m pgdr` runs the CLI."""

from pgdr.cli import main

main()
