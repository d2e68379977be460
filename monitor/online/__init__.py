"""Per-model state and the pipeline: detector banks, references, labels, the online learner."""
