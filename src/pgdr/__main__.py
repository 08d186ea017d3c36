"""`python -m pgdr` runs the CLI, as the console script does."""

from pgdr.entry import main

main()
