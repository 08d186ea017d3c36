"""Commands that chain actions in the runbook's order: restore with --clean (check, safety backup, clean,
restore), backup then prune, the whole recovery and its drill, the demo. Actions never import each other; these
modules are where one step follows another."""
