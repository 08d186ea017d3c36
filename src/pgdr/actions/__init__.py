"""Actions: orchestration only, one module per runbook step, in data-flow order."""
