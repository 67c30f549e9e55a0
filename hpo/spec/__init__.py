"""What a study is: the validated spec, its search space, and the sampler and pruner registries.
Imports nothing of the store, the run side or the read side."""
