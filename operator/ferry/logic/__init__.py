"""Pure logic: naming, conditions, manifests, scaling and diffs. No I/O of any kind."""
