"""The seed algorithms; baselines are configurations of these (see jmarl.registry)."""
