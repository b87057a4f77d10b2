"""The robustness suite: bad inputs across the node, the bag tools, checkpoints, configs,
datasets and output paths. Every case is marked ``bad_input``; the summary line that counts them
is printed by test/conftest.py (a hook here would not run in pytest-xdist's controller, which
collects nothing)."""
