"""The study machinery: opening a study (study), its sampler and pruner (samplers), the study-wide lock (lock),
crash recovery (recovery), the stop flag, one worker's trial loop, and the --workers parent (supervisor)."""
